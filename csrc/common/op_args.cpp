// The argument rules of csrc/common/op_args.h.
#include "common/op_args.h"

#include <string>

#include "common/op_config.h"

namespace gfn_fast {

namespace {

bool is_floating(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

}  // namespace

void OpArgs::same_device(const at::Tensor& t, const at::Tensor& like, const char* name) const {
  TORCH_CHECK_VALUE(t.device() == like.device(), op_, ": ", name, ": expected a tensor on ",
                    like.device(), ", got one on ", t.device());
}

void OpArgs::floating(const at::Tensor& t, const char* name) const {
  TORCH_CHECK_VALUE(is_floating(t.scalar_type()), op_, ": ", name,
                    ": expected a float32, float64, bfloat16 or float16 tensor, got ",
                    t.scalar_type());
}

void OpArgs::floating_dtype(at::ScalarType t, const char* name) const {
  TORCH_CHECK_VALUE(is_floating(t), op_, ": ", name,
                    ": expected float32, float64, bfloat16 or float16, got ", t);
}

void OpArgs::accumulation(const at::Tensor& t, const char* name) const {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op_, ": ",
                    name, ": expected a float32 or float64 tensor, got ", t.scalar_type());
}

void OpArgs::index(const at::Tensor& t, const at::Tensor& like, const char* name) const {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, op_, ": ", name,
                    ": expected an int32 or int64 tensor, got ", t.scalar_type());
  same_device(t, like, name);
}

void OpArgs::one_dim(const at::Tensor& t, int64_t n, const char* name) const {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, op_, ": ", name,
                    ": expected a 1-D tensor of ", n, " elements, got shape ", t.sizes());
}

void OpArgs::vec_shape(const at::Tensor& t, int64_t n, const char* name) const {
  TORCH_CHECK_VALUE(t.numel() == n && (t.dim() <= 1 || n == 1), op_, ": ", name, ": expected ",
                    n, " element(s) in at most one dimension, got shape ", t.sizes());
}

void OpArgs::same_shape(const at::Tensor& t, at::IntArrayRef shape, const char* like_name,
                        const char* name) const {
  TORCH_CHECK_VALUE(t.sizes() == shape, op_, ": ", name, ": expected the shape of ", like_name,
                    " ", shape, ", got ", t.sizes());
}

LayoutShape OpArgs::layout_shape(at::IntArrayRef steps_shape,
                                 const c10::optional<at::Tensor>& lengths,
                                 const c10::optional<at::Tensor>& offsets, const at::Tensor& like,
                                 const char* name) const {
  TORCH_CHECK_VALUE(!(lengths.has_value() && offsets.has_value()), op_,
                    ": lengths and offsets: expected at most one of them, got both");
  LayoutShape shape;
  if (offsets.has_value()) {
    index(*offsets, like, "offsets");
    TORCH_CHECK_VALUE(offsets->dim() == 1 && offsets->numel() >= 1, op_,
                      ": offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape ",
                      offsets->sizes());
    TORCH_CHECK_VALUE(steps_shape.size() == 1, op_, ": ", name,
                      ": with offsets (packed layout) expected per-step shape [N], got ",
                      steps_shape);
    shape.batch = offsets->numel() - 1;
    shape.steps = steps_shape[0];
    shape.packed = true;
    return shape;
  }
  TORCH_CHECK_VALUE(steps_shape.size() == 2, op_, ": ", name,
                    ": expected per-step shape [B, T] (padded) or pass offsets, got ",
                    steps_shape);
  shape.batch = steps_shape[0];
  shape.steps = steps_shape[1];
  if (lengths.has_value()) {
    index(*lengths, like, "lengths");
    one_dim(*lengths, shape.batch, "lengths");
  }
  return shape;
}

int64_t OpArgs::logits_shape(const at::Tensor& logits, const at::Tensor& actions,
                             const c10::optional<at::Tensor>& action_mask) const {
  floating(logits, "logits");
  TORCH_CHECK_VALUE(logits.dim() == 2 || logits.dim() == 3, op_,
                    ": logits: expected [B, T, A] (padded) or [N, A] (packed), got shape ",
                    logits.sizes());
  index(actions, logits, "actions");
  const at::IntArrayRef steps = logits.sizes().slice(0, logits.dim() - 1);
  TORCH_CHECK_VALUE(actions.sizes() == steps, op_,
                    ": actions: expected the shape of logits without its last axis ", steps,
                    ", got ", actions.sizes());
  const int64_t num_actions = logits.size(-1);
  TORCH_CHECK_VALUE(num_actions >= 1, op_, ": logits: expected at least one action, got shape ",
                    logits.sizes());
  if (action_mask.has_value()) {
    same_device(*action_mask, logits, "action_mask");
    TORCH_CHECK_VALUE(action_mask->scalar_type() == at::kBool, op_,
                      ": action_mask: expected a bool tensor, got ", action_mask->scalar_type());
    same_shape(*action_mask, logits.sizes(), "logits", "action_mask");
  }
  return num_actions;
}

batch::Config OpArgs::batch_arguments(int64_t k, const at::Tensor& like,
                                      const at::Tensor& log_reward,
                                      const c10::optional<at::Tensor>& log_behavior,
                                      const c10::optional<at::Tensor>& log_z,
                                      c10::string_view objective,
                                      c10::string_view control_variate, double alpha,
                                      bool paper_normalization) const {
  const batch::Config config = make_config(std::string(objective), std::string(control_variate),
                                           alpha, paper_normalization, op_);
  check_batch(config, k, log_z.has_value(), log_behavior.has_value(), op_);
  floating(log_reward, "log_reward");
  same_device(log_reward, like, "log_reward");
  one_dim(log_reward, k, "log_reward");
  if (log_behavior.has_value()) {
    floating(*log_behavior, "log_behavior");
    same_device(*log_behavior, like, "log_behavior");
    one_dim(*log_behavior, k, "log_behavior");
  }
  if (log_z.has_value()) {
    floating(*log_z, "log_z");
    same_device(*log_z, like, "log_z");
    vec_shape(*log_z, 1, "log_z");
  }
  return config;
}

}  // namespace gfn_fast
