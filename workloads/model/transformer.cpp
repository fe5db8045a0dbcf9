#include "workloads/model/transformer.h"

#include <algorithm>

#include <fmt/format.h>

namespace memwall {

double TransformerModel::expected_token_nodes(int64_t nodes) const {
  if (experts == 0 || nodes <= 1) return 1.0;
  // P(none of top_k distinct experts drawn uniformly from `pool` lies among `these` of them).
  auto miss = [&](double pool, double these) {
    double p = 1;
    for (int64_t i = 0; i < top_k; ++i) {
      if (pool - these - double(i) <= 0) return 0.0;
      p *= (pool - these - double(i)) / (pool - double(i));
    }
    return p;
  };
  auto choose = [](int64_t n, int64_t r) {
    if (r < 0 || r > n) return 0.0;
    double c = 1;
    for (int64_t i = 1; i <= r; ++i) c = c * double(n - r + i) / double(i);
    return c;
  };
  const double E = double(experts), per_node = E / double(nodes);
  const int64_t G = router_groups, M = router_group_topk;
  if (G <= 1 || M >= G || (G % nodes != 0 && nodes % G != 0))
    return double(nodes) * (1 - miss(E, per_node));
  const double per_group = E / double(G), pool = double(M) * per_group;
  // Each group spans whole nodes: a node is reached when its group is chosen.
  if (nodes % G == 0) return double(nodes) * double(M) / double(G) * (1 - miss(pool, per_node));
  // Each node holds G / nodes whole groups, x of them chosen (hypergeometric).
  const int64_t per = G / nodes;
  double reached = 0;
  for (int64_t x = 1; x <= std::min(per, M); ++x)
    reached += choose(per, x) * choose(G - per, M - x) / choose(G, M) *
               (1 - miss(pool, double(x) * per_group));
  return double(nodes) * reached;
}

int64_t TransformerModel::attention_in_parameter_count() const {
  const int64_t h = hidden;
  if (!mla()) return h * qkv_width();
  const int64_t norm_w = norm == NormType::LayerNorm ? 2 : 1;
  // Queries: h -> q latent (normalised) -> heads x head_dim, or h -> heads x head_dim. Keys
  // and values: h -> kv latent (normalised) plus the shared rotary key, then the latent ->
  // heads x (nope + value).
  int64_t q = q_lora_rank > 0 ? h * q_lora_rank + norm_w * q_lora_rank + q_lora_rank * mla_q_width()
                              : h * mla_q_width();
  int64_t kv = h * (kv_lora_rank + qk_rope_head_dim) + norm_w * kv_lora_rank +
               kv_lora_rank * mla_kv_width();
  return q + kv;
}

int64_t TransformerModel::layer_parameter_count() const {
  const int64_t h = hidden;
  int64_t attn = attention_in_parameter_count() + attn_width() * h;
  int64_t mlp_w = h * fc1_width() + ffn_hidden * h;
  int64_t norms = 2 * (norm == NormType::LayerNorm ? 2 * h : h);
  int64_t biases = bias ? qkv_width() + h + fc1_width() + h : 0;
  return attn + mlp_w + norms + biases;
}

int64_t TransformerModel::expert_parameter_count() const {
  const int64_t h = hidden;
  return h * expert_fc1_width() + expert_ffn() * h + (bias ? expert_fc1_width() + h : 0);
}

int64_t TransformerModel::shared_expert_parameter_count() const {
  if (!shared_expert()) return 0;
  const int64_t h = hidden;
  return h * shared_fc1_width() + shared_expert_ffn_hidden * h +
         (bias ? shared_fc1_width() + h : 0);
}

int64_t TransformerModel::layer_parameter_count(int64_t l) const {
  if (!moe_layer(l)) return layer_parameter_count();
  const int64_t h = hidden;
  int64_t dense_mlp = h * fc1_width() + ffn_hidden * h + (bias ? fc1_width() + h : 0);
  return layer_parameter_count() - dense_mlp + h * experts + experts * expert_parameter_count() +
         shared_expert_parameter_count();
}

int64_t TransformerModel::active_parameter_count() const {
  int64_t n = parameter_count();
  for (int64_t l = 0; l < layers; ++l)
    if (moe_layer(l)) n -= (experts - top_k) * expert_parameter_count();
  return n;
}

int64_t TransformerModel::embedding_parameter_count() const {
  const int64_t h = hidden;
  int64_t tables = vocab * h + type_vocab * h;
  if (positions == PositionType::Learned) tables += max_position * h;
  int64_t head = tied_embeddings ? 0 : vocab * h;
  int64_t final_norm = norm == NormType::LayerNorm ? 2 * h : h;
  return tables + head + final_norm;
}

int64_t TransformerModel::parameter_count() const {
  int64_t n = embedding_parameter_count();
  for (int64_t l = 0; l < layers; ++l) n += layer_parameter_count(l);
  return n;
}

int64_t TransformerModel::mtp_parameter_count() const {
  const int64_t norm_w = norm == NormType::LayerNorm ? 2 * hidden : hidden;
  int64_t n = 0;
  for (int64_t k = 0; k < mtp_layers; ++k)
    n += layer_parameter_count(layers + k) + 3 * norm_w + 2 * hidden * hidden;
  return n;
}

int64_t TransformerModel::lookup_parameter_count() const {
  int64_t n = type_vocab * hidden;
  if (positions == PositionType::Learned) n += max_position * hidden;
  if (!tied_embeddings) n += vocab * hidden;
  return n;
}

namespace {

ParamSpec count(const char* name, const char* desc, const char* def = nullptr) {
  ParamSpec p = def ? param(name, ParamType::Int, "count", def, desc)
                    : required(name, ParamType::Int, "count", desc);
  p.positive = true;
  return p;
}
ParamSpec optional_count(const char* name, const char* desc) {
  ParamSpec p = optional_param(name, ParamType::Int, "count", desc);
  p.positive = true;
  return p;
}
ParamSpec choice(const char* name, const char* def, std::vector<std::string> choices,
                 const char* desc) {
  ParamSpec p = param(name, ParamType::Enum, "", def, desc);
  p.choices = std::move(choices);
  return p;
}
ParamSpec flag(const char* name, const char* def, const char* desc) {
  return param(name, ParamType::Bool, "", def, desc);
}

}  // namespace

const Schema& model_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "model";
    x.description =
        "A transformer's shape: layers, widths, attention layout, vocabulary and the "
        "kernel choices (MLP, norm, dropout) that training runs.";
    x.params = {
        param("name", ParamType::String, "", "custom-model", "Name shown in reports."),
        param("description", ParamType::String, "", "", "Free text: what the preset models."),
        param("source", ParamType::String, "", "", "Where the shape was published."),
        [] {
          ParamSpec p = count("layers", "Transformer layers.");
          p.max = double(kMaxLayers);
          return p;
        }(),
        count("hidden", "Model width h."),
        optional_count("ffn_hidden", "MLP inner width f; absent: 4 x hidden."),
        count("heads", "Query heads."),
        optional_count("kv_heads", "Key/value heads (grouped-query attention); absent: heads."),
        optional_count("head_dim", "Head size; absent: hidden / heads."),
        optional_count("q_lora_rank",
                       "Multi-head latent attention (DeepSeek-V2/V3): width of the query latent; "
                       "absent: queries projected directly from the hidden state."),
        optional_count("kv_lora_rank",
                       "Multi-head latent attention: width of the key/value latent; absent: "
                       "standard attention. Needs qk_nope_head_dim, qk_rope_head_dim and "
                       "v_head_dim, rotary positions and no biases."),
        optional_count("qk_nope_head_dim",
                       "Latent attention: the part of each query and key head from the latent."),
        optional_count("qk_rope_head_dim",
                       "Latent attention: the rotary part of each query head, and of the key "
                       "that all heads share."),
        optional_count("v_head_dim", "Latent attention: the value head size."),
        count("seq_len", "Training sequence length."),
        count("vocab", "Vocabulary size (default: GPT-2's BPE, 50257).", "50257"),
        optional_count("max_position",
                       "Rows of the learned position table; absent: seq_len. Ignored with rotary "
                       "positions."),
        [] {
          ParamSpec p = param("type_vocab", ParamType::Int, "count", "0",
                              "Token-type (segment) embeddings; BERT has 2.");
          p.min = 0;
          return p;
        }(),
        choice("mlp", "gelu", {"gelu", "swiglu"},
               "gelu: two matrices (h to f, f to h); swiglu: three (gate, up, down)."),
        choice("norm", "layernorm", {"layernorm", "rmsnorm"}, "Normalisation layer."),
        choice("positions", "learned", {"learned", "rotary"},
               "Learned absolute position table, or rotary embeddings (no parameters)."),
        flag("tied_embeddings", "true", "The LM head shares the token embedding matrix."),
        flag("bias", "true", "Linear layers carry biases (GPT, BERT); Llama has none."),
        flag("dropout", "true",
             "Hidden and attention dropout in training (Megatron GPT, BERT); off in Llama."),
        flag("encoder", "false", "Bidirectional attention (BERT): no causal mask."),
        [] {
          ParamSpec p = param("experts", ParamType::Int, "count", "0",
                              "Experts per MoE layer, each a full MLP; 0: a dense model.");
          p.min = 0;
          return p;
        }(),
        count("top_k", "Experts each token is routed to (MoE only).", "2"),
        count("moe_layer_frequency",
              "Every this many layers is an MoE layer, from layer 0 (Megatron's moe_layer_freq); "
              "1: all.",
              "1"),
        [] {
          ParamSpec p = param("first_dense_layers", ParamType::Int, "count", "0",
                              "Leading layers that keep a dense MLP in an MoE model "
                              "(DeepSeek-V3's first_k_dense_replace).");
          p.min = 0;
          return p;
        }(),
        optional_count("router_groups",
                       "Group-limited routing (DeepSeek-V3's node-limited routing, n_group; "
                       "Megatron's --moe-router-num-groups): the experts form this many groups "
                       "of consecutive experts; absent: none."),
        optional_count("router_group_topk",
                       "Groups a token's experts are chosen from (DeepSeek-V3's topk_group: 4 of "
                       "8; Megatron's --moe-router-group-topk). Needs router_groups."),
        [] {
          ParamSpec p = param("mtp_layers", ParamType::Int, "count", "0",
                              "Multi-token-prediction modules after the trunk (DeepSeek-V3's "
                              "num_nextn_predict_layers: 1; Megatron-core's --mtp-num-layers): "
                              "each normalises the previous depth's hidden state and the next "
                              "token's embedding, projects the pair (2h to h), runs one "
                              "transformer layer and the shared LM head with a loss of its own.");
          p.min = 0;
          return p;
        }(),
        optional_count("expert_ffn_hidden", "Inner width of one expert; absent: ffn_hidden."),
        optional_count("shared_expert_ffn_hidden",
                       "Inner width of the shared expert that every token passes through beside "
                       "its routed experts (DeepSeekMoE, Qwen2-MoE; Megatron's "
                       "--moe-shared-expert-intermediate-size: the shared experts' widths "
                       "summed); absent: none."),
    };
    x.reserved_keys = {"preset"};
    return x;
  }();
  return s;
}

TransformerModel model_from_config(const Config& c) {
  TransformerModel m;
  auto present = [&](const char* k) { return bool(c.node()[k]); };
  m.name = c.get_string("name");
  m.source = c.get_string("source");
  m.layers = c.get_int("layers");
  m.hidden = c.get_int("hidden");
  m.ffn_hidden = present("ffn_hidden") ? c.get_int("ffn_hidden") : 4 * m.hidden;
  m.heads = c.get_int("heads");
  m.kv_heads = present("kv_heads") ? c.get_int("kv_heads") : m.heads;
  if (m.heads % m.kv_heads != 0)
    c.fail("kv_heads", fmt::format("heads ({}) must be a multiple of kv_heads ({}): each key/value "
                                   "head serves a whole group of query heads",
                                   m.heads, m.kv_heads));
  if (present("kv_lora_rank")) {
    // Multi-head latent attention: every head has its own key and value after the
    // up-projection, and a query/key head of nope + rope.
    for (const char* k : {"qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"})
      if (!present(k))
        c.fail("kv_lora_rank",
               fmt::format("latent attention needs {} beside kv_lora_rank", k));
    if (present("kv_heads") && c.get_int("kv_heads") != m.heads)
      c.fail("kv_heads", "latent attention up-projects a key and a value for every head: "
                         "kv_heads must equal heads or be left out");
    m.kv_heads = m.heads;
    m.kv_lora_rank = c.get_int("kv_lora_rank");
    m.q_lora_rank = present("q_lora_rank") ? c.get_int("q_lora_rank") : 0;
    m.qk_rope_head_dim = c.get_int("qk_rope_head_dim");
    m.v_head_dim = c.get_int("v_head_dim");
    const int64_t d = c.get_int("qk_nope_head_dim") + m.qk_rope_head_dim;
    if (present("head_dim") && c.get_int("head_dim") != d)
      c.fail("head_dim", fmt::format("with latent attention head_dim is qk_nope_head_dim + "
                                     "qk_rope_head_dim ({}); leave it out",
                                     d));
    m.head_dim = d;
  } else if (present("q_lora_rank") || present("qk_nope_head_dim") ||
             present("qk_rope_head_dim") || present("v_head_dim")) {
    const char* k = present("q_lora_rank")        ? "q_lora_rank"
                    : present("qk_nope_head_dim") ? "qk_nope_head_dim"
                    : present("qk_rope_head_dim") ? "qk_rope_head_dim"
                                                  : "v_head_dim";
    c.fail(k, "a latent-attention key: set kv_lora_rank too (or remove it)");
  } else if (present("head_dim")) {
    m.head_dim = c.get_int("head_dim");
  } else {
    if (m.hidden % m.heads != 0)
      c.fail("heads", fmt::format("hidden ({}) is not a multiple of heads ({}); give head_dim "
                                  "explicitly",
                                  m.hidden, m.heads));
    m.head_dim = m.hidden / m.heads;
  }
  m.seq_len = c.get_int("seq_len");
  m.vocab = c.get_int("vocab");
  m.type_vocab = c.get_int("type_vocab");
  std::string mlp = c.get_string("mlp");
  m.mlp = mlp == "swiglu" ? MlpType::SwiGlu : MlpType::Gelu;
  m.norm = c.get_string("norm") == "rmsnorm" ? NormType::RmsNorm : NormType::LayerNorm;
  m.positions =
      c.get_string("positions") == "rotary" ? PositionType::Rotary : PositionType::Learned;
  if (m.positions == PositionType::Learned) {
    m.max_position = present("max_position") ? c.get_int("max_position") : m.seq_len;
    if (m.seq_len > m.max_position)
      c.fail("seq_len", fmt::format("seq_len ({}) exceeds the learned position table "
                                    "(max_position {}); shorten seq_len or raise max_position",
                                    m.seq_len, m.max_position));
  } else {
    m.max_position = 0;
  }
  m.tied_embeddings = c.get_bool("tied_embeddings");
  m.bias = c.get_bool("bias");
  if (m.mla() && m.positions != PositionType::Rotary)
    c.fail("positions", "latent attention rotates a decoupled part of each query and key: set "
                        "positions: rotary");
  if (m.mla() && m.bias)
    c.fail("bias", "latent attention is modelled without biases (DeepSeek-V2/V3 have none): set "
                   "bias: false");
  m.dropout = c.get_bool("dropout");
  m.encoder = c.get_bool("encoder");
  m.experts = c.get_int("experts");
  m.top_k = c.get_int("top_k");
  m.moe_layer_frequency = c.get_int("moe_layer_frequency");
  m.first_dense_layers = c.get_int("first_dense_layers");
  m.mtp_layers = c.get_int("mtp_layers");
  if (present("router_groups") != present("router_group_topk"))
    c.fail(present("router_groups") ? "router_groups" : "router_group_topk",
           "group-limited routing needs both router_groups and router_group_topk");
  if (present("router_groups")) {
    m.router_groups = c.get_int("router_groups");
    m.router_group_topk = c.get_int("router_group_topk");
    if (m.experts == 0) c.fail("router_groups", "groups experts: set experts");
    if (m.experts % m.router_groups != 0)
      c.fail("router_groups", fmt::format("experts ({}) must be divisible by router_groups ({})",
                                          m.experts, m.router_groups));
    if (m.router_group_topk > m.router_groups)
      c.fail("router_group_topk", fmt::format("router_group_topk ({}) exceeds router_groups ({})",
                                              m.router_group_topk, m.router_groups));
    if (m.router_group_topk * (m.experts / m.router_groups) < m.top_k)
      c.fail("router_group_topk",
             fmt::format("{} groups of {} experts cannot hold a token's top_k ({}) experts",
                         m.router_group_topk, m.experts / m.router_groups, m.top_k));
  }
  if (m.first_dense_layers > 0 && m.experts == 0)
    c.fail("first_dense_layers", "dense leading layers are a choice of an MoE model: set experts");
  if (m.experts > 0 && m.first_dense_layers >= m.layers)
    c.fail("first_dense_layers",
           fmt::format("first_dense_layers ({}) leaves no MoE layer of the {}", m.first_dense_layers,
                       m.layers));
  m.expert_ffn_hidden = present("expert_ffn_hidden") ? c.get_int("expert_ffn_hidden") : 0;
  m.shared_expert_ffn_hidden =
      present("shared_expert_ffn_hidden") ? c.get_int("shared_expert_ffn_hidden") : 0;
  if (m.shared_expert_ffn_hidden > 0 && m.experts == 0)
    c.fail("shared_expert_ffn_hidden", "a shared expert sits beside routed experts: set experts");
  if (m.experts > 0 && m.top_k > m.experts)
    c.fail("top_k", fmt::format("top_k ({}) exceeds experts ({}): a token cannot be routed to more "
                                "experts than a layer has",
                                m.top_k, m.experts));
  return m;
}

namespace {
TransformerModel finish(Document& doc, const std::vector<std::string>& overrides) {
  resolve_preset(doc, "", "models");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, model_schema(), "", *doc.sources);
  return model_from_config(Config(doc.root, model_schema(), "", doc.sources));
}
}  // namespace

TransformerModel load_model(const std::string& name_or_file,
                            const std::vector<std::string>& overrides) {
  Document doc = load_preset_or_file(name_or_file, "--model");
  return finish(doc, overrides);
}

TransformerModel load_model_string(const std::string& yaml, const std::string& name) {
  Document doc = load_yaml_string(yaml, name);
  return finish(doc, {});
}

}  // namespace memwall
