// The shape of a transformer: what a model preset says, and the parameter count that follows.
//
// A TransformerModel is plain data: the layer count and widths, the attention layout (heads and
// grouped key/value heads), the vocabulary and positions, and the choices that change the kernels
// a layer runs (MLP type, norm type, dropout, biases, causal or not). It knows no training setup
// and no hardware; the step-graph generator (workloads/training/) turns it into operators.
//
// Presets live in configs/models/<name>.yaml and are loaded with load_model(), which resolves
// `preset:` chains, applies `-p key=value` overrides and validates against model_schema(); every
// inconsistency (heads not a multiple of kv_heads, a zero length) is a ConfigError at file:line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/config/config.h"

namespace memwall {

enum class MlpType { Gelu, SwiGlu };
enum class NormType { LayerNorm, RmsNorm };
enum class PositionType { Learned, Rotary };

/// The most layers a model may have: the step graph holds every layer's nodes (GPT-3 has 96,
/// Llama 3 405B 126).
constexpr int64_t kMaxLayers = 4096;

struct TransformerModel {
  std::string name = "custom-model";
  std::string source;  ///< where the shape was published
  int64_t layers = 1;
  int64_t hidden = 64;  ///< model width h
  int64_t ffn_hidden =
      256;                ///< MLP inner width f (per matrix; SwiGLU has gate and up of this width)
  int64_t heads = 1;      ///< query heads a
  int64_t kv_heads = 1;   ///< key/value heads (== heads: multi-head; < heads: grouped-query)
  int64_t head_dim = 64;  ///< d; heads * head_dim is the attention width (usually == hidden)
  // Multi-head latent attention (DeepSeek-V2, V3): queries and keys/values pass through low-rank
  // latents; each head's query and key are a "nope" part from the latent and a rotary part
  // (the key's shared by all heads); values have their own head size. head_dim is then
  // qk_nope_head_dim + qk_rope_head_dim. kv_lora_rank 0: standard attention.
  int64_t q_lora_rank = 0;       ///< query latent width; 0: queries projected directly from h
  int64_t kv_lora_rank = 0;      ///< key/value latent width
  int64_t qk_rope_head_dim = 0;  ///< rotary part of each query and key head
  int64_t v_head_dim = 0;        ///< value head size (MLA); 0: head_dim
  int64_t seq_len = 128;  ///< training sequence length s
  int64_t vocab = 50257;  ///< V
  int64_t max_position = 0;  ///< rows of the learned position table (0 with rotary positions)
  int64_t type_vocab = 0;    ///< token-type (segment) embeddings, BERT: 2
  MlpType mlp = MlpType::Gelu;
  NormType norm = NormType::LayerNorm;
  PositionType positions = PositionType::Learned;
  bool tied_embeddings = true;  ///< the LM head reuses the input embedding matrix
  bool bias = true;             ///< linear layers carry biases (GPT, BERT; not Llama)
  bool dropout = true;          ///< hidden and attention dropout during training (GPT, BERT)
  bool encoder = false;         ///< bidirectional (non-causal) attention, as in BERT
  // Mixture of experts (Shazeer et al. 2017; GShard; Switch; Mixtral). 0 experts: dense.
  int64_t experts = 0;              ///< experts per MoE layer; each is a full MLP
  int64_t top_k = 2;                ///< experts each token is routed to
  int64_t moe_layer_frequency = 1;  ///< layer l is MoE when l % frequency == 0 (Megatron)
  /// Leading layers that keep a dense MLP (DeepSeek-V3's first_k_dense_replace: 3).
  int64_t first_dense_layers = 0;
  /// Group-limited routing (DeepSeek-V3's node-limited routing; Megatron's
  /// --moe-router-num-groups and --moe-router-group-topk): the experts form this many groups of
  /// consecutive experts, and a token's top_k experts come from its best router_group_topk
  /// groups. 0: no groups.
  int64_t router_groups = 0;
  int64_t router_group_topk = 0;
  /// Multi-token prediction (DeepSeek-V3's MTP, num_nextn_predict_layers; Megatron-core's
  /// --mtp-num-layers): modules after the trunk, module k predicting token i + k + 2 from the
  /// previous depth's hidden state and the embedding of token i + k + 1, each a projection of
  /// the two normalised inputs, one transformer layer (like the model's last), and the shared
  /// LM head with a norm of its own. 0: none.
  int64_t mtp_layers = 0;
  int64_t expert_ffn_hidden = 0;    ///< inner width of one expert; 0: ffn_hidden
  /// Inner width of the shared expert every token passes through beside its routed ones
  /// (DeepSeekMoE, Qwen2-MoE; Megatron's --moe-shared-expert-intermediate-size, the shared
  /// experts' widths summed); 0: none.
  int64_t shared_expert_ffn_hidden = 0;

  bool causal() const { return !encoder; }
  bool mla() const { return kv_lora_rank > 0; }
  /// Value head size: v_head_dim with latent attention, else head_dim.
  int64_t value_dim() const { return v_head_dim > 0 ? v_head_dim : head_dim; }
  /// Attention width, the output projection's input: heads * value_dim().
  int64_t attn_width() const { return heads * value_dim(); }
  /// Width of the fused QKV projection's output: (heads + 2 kv_heads) * head_dim. With latent
  /// attention, what the attention kernel reads per token: heads x (2 head_dim + value_dim()).
  int64_t qkv_width() const {
    return mla() ? heads * (2 * head_dim + value_dim()) : (heads + 2 * kv_heads) * head_dim;
  }
  /// Latent attention: the query up-projection's output, heads x head_dim, and the key/value
  /// one's, heads x (qk_nope_head_dim + v_head_dim).
  int64_t mla_q_width() const { return heads * head_dim; }
  int64_t mla_kv_width() const { return heads * (head_dim - qk_rope_head_dim + value_dim()); }
  /// Weights of the attention block before the core: the QKV projection, or latent attention's
  /// down- and up-projections (and its latent norms).
  int64_t attention_in_parameter_count() const;
  /// Output width of the first MLP matrix: f (GELU) or 2f (SwiGLU gate and up, fused).
  int64_t fc1_width() const { return mlp == MlpType::SwiGlu ? 2 * ffn_hidden : ffn_hidden; }

  bool moe() const { return experts > 0; }
  /// Whether layer `l` (from 0) replaces its MLP with experts.
  bool moe_layer(int64_t l) const {
    return experts > 0 && l >= first_dense_layers && l % moe_layer_frequency == 0;
  }
  /// Inner width of one expert.
  int64_t expert_ffn() const { return expert_ffn_hidden > 0 ? expert_ffn_hidden : ffn_hidden; }
  /// Output width of an expert's first matrix: f_e (GELU) or 2 f_e (SwiGLU).
  int64_t expert_fc1_width() const { return mlp == MlpType::SwiGlu ? 2 * expert_ffn() : expert_ffn(); }
  /// Whether MoE layers carry a shared expert.
  bool shared_expert() const { return moe() && shared_expert_ffn_hidden > 0; }
  /// Output width of the shared expert's first matrix: f_s (GELU) or 2 f_s (SwiGLU).
  int64_t shared_fc1_width() const {
    return mlp == MlpType::SwiGlu ? 2 * shared_expert_ffn_hidden : shared_expert_ffn_hidden;
  }
  /// The expected number of distinct nodes that hold a token's top_k experts, with the
  /// experts spread evenly over `nodes` nodes in order, the token's experts drawn uniformly
  /// (balanced routing) from its router groups (all experts without groups), each group chosen
  /// with equal chance. Exact when groups fall on node boundaries (or nodes on group
  /// boundaries); otherwise the group limit is ignored.
  double expected_token_nodes(int64_t nodes) const;
  /// Parameters of the shared expert's MLP (weights and biases); 0 without one.
  int64_t shared_expert_parameter_count() const;

  /// Parameters of one dense transformer layer: attention, MLP, two norms, biases.
  int64_t layer_parameter_count() const;
  /// Parameters of layer `l`: dense, or attention + norms + router (h x experts) + every expert
  /// + the shared expert.
  int64_t layer_parameter_count(int64_t l) const;
  /// Parameters of one expert's MLP (weights and biases).
  int64_t expert_parameter_count() const;
  /// Parameters a token passes through: as parameter_count(), with top_k experts per MoE layer
  /// instead of all (Mixtral 8x7B: 12.9B active of 46.7B).
  int64_t active_parameter_count() const;
  /// Parameters of the embedding tables (token, position, token type) and, when untied, the LM
  /// head; plus the final norm.
  int64_t embedding_parameter_count() const;
  /// Every trainable parameter, without the multi-token-prediction modules (as model sizes are
  /// published: DeepSeek-V3's 671B).
  int64_t parameter_count() const;
  /// The multi-token-prediction modules' own parameters (three norms, the 2h x h projection and
  /// a layer each; the embedding and the LM head are the model's).
  int64_t mtp_parameter_count() const;
  /// Parameters used only as lookup tables, which no matrix product multiplies: position and
  /// token-type tables, and the token table when the LM head does not share it. The "6 N T"
  /// FLOP rule holds for N = parameter_count() - lookup_parameter_count().
  int64_t lookup_parameter_count() const;
};

/// Schema of a model file (configs/models/*.yaml, or a `model:` section).
const Schema& model_schema();
/// Builds a model from a validated section; throws ConfigError on inconsistent shapes.
TransformerModel model_from_config(const Config& c);
/// Loads a preset by name (configs/models/NAME.yaml) or a YAML file by path, applies
/// `key.path=value` overrides and validates.
TransformerModel load_model(const std::string& name_or_file,
                            const std::vector<std::string>& overrides = {});
/// Loads a model from YAML text (tests, inline experiment sections); `name` stands in for a file.
TransformerModel load_model_string(const std::string& yaml, const std::string& name);

}  // namespace memwall
