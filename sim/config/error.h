// Configuration errors that point at the user's input.
//
// Every mistake in a YAML file or a -p override becomes a ConfigError carrying the file, the line
// (1-based, 0 when unknown) and the dotted key path. The command line prints what() and exits with
// status 2; nothing else in the simulator decides how a config error is shown.
#pragma once

#include <stdexcept>
#include <string>

namespace memwall {

/// Where a value came from: a file and line, or a command-line override.
struct SourceLoc {
  std::string file;  ///< path as the user gave it, or "command line"
  int line = 0;      ///< 1-based; 0 when unknown
};

class ConfigError : public std::runtime_error {
 public:
  ConfigError(SourceLoc loc, std::string key_path, std::string message)
      : std::runtime_error(format(loc, key_path, message)),
        loc_(std::move(loc)),
        key_path_(std::move(key_path)),
        message_(std::move(message)) {}

  const SourceLoc& loc() const { return loc_; }
  const std::string& key_path() const { return key_path_; }
  const std::string& message() const { return message_; }

 private:
  static std::string format(const SourceLoc& loc, const std::string& key, const std::string& msg) {
    std::string s = loc.file.empty() ? "<input>" : loc.file;
    if (loc.line > 0) s += ":" + std::to_string(loc.line);
    s += ": ";
    if (!key.empty()) s += "key '" + key + "': ";
    return s + msg;
  }
  SourceLoc loc_;
  std::string key_path_;
  std::string message_;
};

/// Input the simulator refuses for its size rather than its form: a kernel with more work groups
/// than tile fidelity simulates. The command line prints what() and exits with status 2, as for
/// a ConfigError.
class LimitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace memwall
