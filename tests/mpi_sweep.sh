#!/bin/sh
# A sweep under mpirun gives the same file as a local one, and resumes an interrupted file.
# usage: mpi_sweep.sh MEMWALL MPIEXEC SWEEP.yaml
set -eu
memwall=$1 mpiexec=$2 sweep=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
# A machine whose MPI launcher cannot start two processes at all (a container without what
# Open MPI needs) skips the test rather than failing it; memwall is not what failed there.
if ! "$mpiexec" --oversubscribe -np 2 true >/dev/null 2>&1; then
  echo "mpirun cannot start 2 processes here: skipped"
  exit 77
fi
rm -f mpi_local.csv mpi_ranks.csv
"$memwall" sweep "$sweep" -o mpi_local.csv --fresh -j 1 >/dev/null
"$mpiexec" --oversubscribe -np 3 "$memwall" sweep "$sweep" -o mpi_ranks.csv --fresh > mpi_out.txt
grep -q "3 MPI ranks" mpi_out.txt
cmp mpi_local.csv mpi_ranks.csv
# Keep the header and the first row, cut the second mid-line: the ranks run the rest.
head -2 mpi_local.csv > mpi_ranks.csv
sed -n 3p mpi_local.csv | cut -c1-10 | tr -d '\n' >> mpi_ranks.csv
"$mpiexec" --oversubscribe -np 2 "$memwall" sweep "$sweep" -o mpi_ranks.csv > mpi_out.txt
grep -q "1 points were in mpi_ranks.csv already (resumed); ran 3" mpi_out.txt
cmp mpi_local.csv mpi_ranks.csv
echo "mpi sweep: same rows as the local sweep, and resumed"
