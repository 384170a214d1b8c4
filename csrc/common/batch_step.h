// The detached batch step of MATH.md, written once for the CPU and CUDA kernels.
//
// Given K per-trajectory sums s_k = log p_F, b_k = log p_B, the log-rewards r_k and
// optionally the behaviour log-probabilities log q_k and a log Z, it computes the
// surrogate coefficients (c [K], d [K], e) and the diagnostics (value, ess, log_z_hat,
// skipped) of every objective. It mirrors gfn_fast/objectives.py branch for branch (the
// stable tilt near alpha = 0 and 1, the renyi d blend, the tsallis alpha window, the skipped
// rules, the dispatch of alpha exactly 0 / 1, paper normalisation, the tsallis log Z rule),
// in double precision.
//
// No torch headers: this file compiles with a host C++17 compiler and with bare nvcc.
//
// Reduction policy. Everything that loops over k goes through a policy object `R`:
//
//   template <class T, class Map, class Combine>
//   GFN_HOST_DEVICE T reduce(int64_t n, T identity, Map map, Combine combine) const;
//       Folds combine over map(0) .. map(n - 1), starting from identity, in a fixed order
//       that may depend only on n (so results are bitwise reproducible). map(i) is called
//       exactly once per i. Every caller receives the result.
//   template <class F>
//   GFN_HOST_DEVICE void for_each(int64_t n, F f) const;
//       Calls f(i) exactly once per i.
//
// map(i) and f(i) may write element i of a scratch or output array and read the elements
// i that earlier calls wrote, never another index: a policy may then run index i on the same
// thread in every call and need no barrier between calls.
//
// The CPU policy folds fixed-size chunks in parallel (csrc/cpu/batch_step_cpu.h). The CUDA
// policy runs the step on a grid of blocks (csrc/cuda/batch.cu): every thread executes
// batch_step, map / f run grid-strided over k, and reduce is a block reduction, combined
// across blocks through grid.sync(), whose result every thread receives. The scalar outputs
// are then identical in every thread; one of them stores them.
#pragma once

#include <cmath>
#include <cstdint>

// Device code under nvcc (only the CUDA kernels call it there); plain functions elsewhere.
#if defined(__CUDACC__)
#define GFN_HOST_DEVICE __device__
#else
#define GFN_HOST_DEVICE
#endif

namespace gfn_fast {
namespace batch {

enum class Objective : int { kTb, kVargrad, kReverseKl, kForwardKl, kRenyi, kTsallis };
enum class ControlVariate : int { kLoo, kNone };

// Tsallis: |alpha| below this uses the forward-KL-limit form of d
// (objectives.ALPHA_ZERO_WINDOW). Renyi needs no window (renyi_d_blend).
constexpr double kAlphaZeroWindow = 1e-6;
// The stable tilt formulas apply while every |tilt * (l - mean)| stays below this.
constexpr double kStableTiltLimit = 1.0;

// Doubles of scratch the caller provides per trajectory (scratch holds kScratchPerK * K).
constexpr int64_t kScratchPerK = 7;

struct Config {
  Objective objective = Objective::kRenyi;
  ControlVariate control_variate = ControlVariate::kLoo;
  double alpha = 0.5;
  bool paper_normalization = false;
};

// Inputs: contiguous double arrays of K entries (already in double; log_pf / log_pb are
// the per-trajectory sums rounded to their accumulation dtype, as objectives.py sees them).
struct BatchInputs {
  int64_t k = 0;
  const double* log_pf = nullptr;        // s [K]
  const double* log_pb = nullptr;        // b [K]; null: p_B = 1
  const double* log_reward = nullptr;    // r [K]
  const double* log_behavior = nullptr;  // log q [K]; null: on-policy
  bool has_log_z = false;
  double log_z = 0.0;
  Config config;
  double* scratch = nullptr;  // kScratchPerK * K doubles, owned by the caller
};

// Outputs: c and d are written through for_each (OutT: float or double); the scalars are
// plain members.
template <class OutT>
struct BatchOutputs {
  OutT* c = nullptr;  // [K]
  OutT* d = nullptr;  // [K]
  double e = 0.0;
  double value = 0.0;
  double ess = 0.0;
  double log_z_hat = 0.0;
  bool skipped = false;
};

namespace detail {

GFN_HOST_DEVICE inline double inf() { return __builtin_huge_val(); }
GFN_HOST_DEVICE inline bool finite(double x) { return x == x && x != inf() && x != -inf(); }
GFN_HOST_DEVICE inline double dmax(double a, double b) { return a > b ? a : b; }
GFN_HOST_DEVICE inline double dabs(double a) { return a < 0 ? -a : a; }

// expm1(t) / t with its limit 1 at t = 0 (objectives._phi).
GFN_HOST_DEVICE inline double phi(double t) { return t == 0.0 ? 1.0 : ::expm1(t) / t; }

// expm1(t) / h for t = h * v, precise also when h is tiny (objectives._expm1_over).
GFN_HOST_DEVICE inline double expm1_over(double t, double h, double v) {
  if (dabs(t) < kStableTiltLimit) return v * phi(t);
  return h != 0.0 ? ::expm1(t) / h : v;
}

struct Sum {
  GFN_HOST_DEVICE double operator()(double a, double b) const { return a + b; }
};
struct Max {
  GFN_HOST_DEVICE double operator()(double a, double b) const { return dmax(a, b); }
};

struct Pair {
  double a;
  double b;
};
struct SumPair {
  GFN_HOST_DEVICE Pair operator()(const Pair& x, const Pair& y) const {
    return Pair{x.a + y.a, x.b + y.b};
  }
};
struct MaxPair {
  GFN_HOST_DEVICE Pair operator()(const Pair& x, const Pair& y) const {
    return Pair{dmax(x.a, y.a), dmax(x.b, y.b)};
  }
};

template <class R, class Map>
GFN_HOST_DEVICE double sum(const R& reduce, int64_t n, Map map) {
  return reduce.reduce(n, 0.0, map, Sum{});
}
template <class R, class Map>
GFN_HOST_DEVICE double max(const R& reduce, int64_t n, Map map) {
  return reduce.reduce(n, -inf(), map, Max{});
}

// Scratch arrays, each [K].
struct Scratch {
  double* l;     // l_k = r_k + b_k - s_k
  double* lrho;  // log rho_k = s_k - log q_k (0 on-policy)
  double* pi;    // softmax(log rho)
  double* w0;    // softmax(l + log rho), 0 for a skipped batch
  double* w;     // objective-specific weights (renyi: softmax((1 - alpha) l + log rho))
  double* t1;    // first tilt's per-k terms
  double* t2;    // second tilt's per-k terms
};

// The quantities every objective starts from (objectives._Batch).
struct Common {
  int64_t k;
  bool on_policy;
  double mean_l;     // sum l / K
  double lse0;       // logsumexp(l + log rho)
  double lse_rho;    // logsumexp(log rho)
  double log_z_hat;  // lse0 - log K
  double ess;
  bool skipped;      // lse0 == -inf
};

template <class R>
GFN_HOST_DEVICE Common prepare(const R& reduce, const BatchInputs& in, const Scratch& sc) {
  Common cm{};
  const int64_t k = in.k;
  cm.k = k;
  cm.on_policy = in.log_behavior == nullptr;
  // l, log rho; max of (l + log rho) and of log rho.
  const Pair maxes = reduce.reduce(
      k, Pair{-inf(), -inf()},
      [&](int64_t i) {
        const double s = in.log_pf[i];
        const double b = in.log_pb ? in.log_pb[i] : 0.0;
        const double l = in.log_reward[i] + b - s;
        const double lr = in.log_behavior ? s - in.log_behavior[i] : 0.0;
        sc.l[i] = l;
        sc.lrho[i] = lr;
        return Pair{l + lr, lr};
      },
      MaxPair{});
  // Unnormalised exponentials, summed; the sum of l for the means.
  const double m0 = maxes.a;
  const double mr = maxes.b;
  const bool all_neg_inf = m0 == -inf();
  const Pair sums = reduce.reduce(
      k, Pair{0.0, 0.0},
      [&](int64_t i) {
        const double e0 = all_neg_inf ? 0.0 : ::exp(sc.l[i] + sc.lrho[i] - m0);
        const double er = cm.on_policy ? 1.0 : ::exp(sc.lrho[i] - mr);
        sc.w0[i] = e0;
        sc.pi[i] = er;
        return Pair{e0, er};
      },
      SumPair{});
  cm.mean_l = sum(reduce, k, [&](int64_t i) { return sc.l[i]; }) / static_cast<double>(k);
  const double log_k = ::log(static_cast<double>(k));
  cm.lse0 = all_neg_inf ? -inf() : m0 + ::log(sums.a);
  cm.lse_rho = cm.on_policy ? log_k : mr + ::log(sums.b);
  cm.skipped = all_neg_inf;
  cm.log_z_hat = cm.lse0 - log_k;
  // Normalise; sum of squared weights for the ESS.
  const double w_sum = sums.a;
  const double r_sum = sums.b;
  const bool skipped = cm.skipped;
  const double sum_sq = sum(reduce, k, [&](int64_t i) {
    const double w = skipped ? 0.0 : sc.w0[i] / w_sum;
    sc.w0[i] = w;
    sc.pi[i] = sc.pi[i] / r_sum;
    return w * w;
  });
  cm.ess = skipped ? 0.0 : 1.0 / sum_sq;
  return cm;
}

GFN_HOST_DEVICE inline double rho_of(const Common& cm, const Scratch& sc, int64_t i) {
  return cm.on_policy ? 1.0 : ::exp(sc.lrho[i]);
}

// For weights p (summing to 1) and values l (objectives._tilt):
//   grad_k = (softmax(log p + h l)_k - p_k) / h     and     log(sum_k p_k e^{h l_k}) / h,
// with the stable phi form near h = 0 and the direct form elsewhere. prepare() fills
// `terms` (one double per k); grad(i) then costs no transcendental call. The direct form
// takes log p_k = log_a_k + log_b_k - log_norm from the log-domain values p came from,
// without a log call (log_b may be null).
struct Tilt {
  const double* p;
  const double* l;
  const double* log_a;
  const double* log_b;
  double log_norm;
  double* terms;
  double h;
  bool stable;
  double mean;     // sum_{p > 0} p l
  double moment;   // stable: sum p v phi(h v)
  double lse;      // direct: logsumexp(log p + h l)
  double log_mgf;

  template <class R>
  GFN_HOST_DEVICE void prepare(const R& reduce, int64_t k) {
    const double* pp = p;
    const double* ll = l;
    double* tt = terms;
    const double hh = h;
    mean = sum(reduce, k, [&](int64_t i) { return pp[i] > 0 ? pp[i] * ll[i] : 0.0; });
    const double mu = mean;
    if (hh == 0.0) {  // forward KL: grad = p (l - mean)
      reduce.for_each(k, [&](int64_t i) { tt[i] = pp[i] > 0 ? ll[i] - mu : 0.0; });
      stable = true;
      moment = 0.0;
      log_mgf = mean;
      return;
    }
    const double max_t = max(reduce, k, [&](int64_t i) {
      const double v = pp[i] > 0 ? ll[i] - mu : 0.0;
      return dabs(hh * v);
    });
    stable = finite(mean) && max_t <= kStableTiltLimit;
    if (stable) {
      moment = sum(reduce, k, [&](int64_t i) {
        const double v = pp[i] > 0 ? ll[i] - mu : 0.0;
        const double v_phi = v * phi(hh * v);
        tt[i] = v_phi;
        return pp[i] * v_phi;
      });
      log_mgf = mean + ::log1p(hh * moment) / hh;
    } else {
      // Zero-weight entries are left out, so l = -inf with h < 0 cannot make -inf + inf.
      const double* la = log_a;
      const double* lb = log_b;
      const double norm = log_norm;
      const double m = max(reduce, k, [&](int64_t i) {
        const double log_p = la[i] + (lb ? lb[i] : 0.0) - norm;
        const double x = pp[i] > 0 ? log_p + hh * ll[i] : -inf();
        tt[i] = x;
        return x;
      });
      const double total = sum(reduce, k, [&](int64_t i) {
        const double e = m == -inf() ? 0.0 : ::exp(tt[i] - m);
        tt[i] = e;
        return e;
      });
      lse = m + ::log(total);
      moment = total;  // the softmax denominator
      log_mgf = lse / hh;
    }
  }

  GFN_HOST_DEVICE double grad(int64_t i) const {
    if (h == 0.0) return p[i] * terms[i];
    if (stable) return p[i] * (terms[i] - moment) / (1.0 + h * moment);
    return (terms[i] / moment - p[i]) / h;
  }
};

GFN_HOST_DEVICE inline Tilt make_tilt(const double* p, const double* log_a, const double* log_b,
                                      double log_norm, const double* l, double* terms, double h) {
  Tilt t{};
  t.p = p;
  t.l = l;
  t.log_a = log_a;
  t.log_b = log_b;
  t.log_norm = log_norm;
  t.terms = terms;
  t.h = h;
  return t;
}

// Objective results before the skip rules and paper normalisation.
struct Result {
  double e;
  double value;
};

// c and d are produced by a functor cd(i, &c, &d) that the caller writes in one pass.
template <class R, class OutT, class CD>
GFN_HOST_DEVICE void write_cd(const R& reduce, int64_t k, BatchOutputs<OutT>& out, double scale,
                              bool zero, CD cd) {
  OutT* c_out = out.c;
  OutT* d_out = out.d;
  reduce.for_each(k, [&](int64_t i) {
    double c = 0.0;
    double d = 0.0;
    if (!zero) {
      cd(i, c, d);
      c *= scale;
      d *= scale;
    }
    c_out[i] = static_cast<OutT>(c);
    d_out[i] = static_cast<OutT>(d);
  });
}

GFN_HOST_DEVICE inline double loo_factor(int64_t k) {
  return static_cast<double>(k) / static_cast<double>(k - 1);
}

}  // namespace detail

// beta(alpha) = clamp(2 - 2 |alpha|, 0, 1) of Renyi's d = -(w_alpha - beta w_0) / alpha
// (objectives.renyi_d_blend).
GFN_HOST_DEVICE inline double renyi_d_blend(double alpha) {
  const double beta = 2.0 - 2.0 * detail::dabs(alpha);
  return beta > 1.0 ? 1.0 : (beta < 0.0 ? 0.0 : beta);
}

// Whether the estimator's expected gradient is zero at K = 1 (objectives.is_self_normalised).
GFN_HOST_DEVICE inline bool is_self_normalised(Objective objective, double alpha,
                                               bool has_log_z) {
  if (objective == Objective::kTsallis) return !has_log_z && alpha != 1.0;
  return objective == Objective::kForwardKl || (objective == Objective::kRenyi && alpha != 1.0);
}

// The batch step: fills out.c, out.d (through reduce.for_each) and the scalar outputs.
template <class R, class OutT>
GFN_HOST_DEVICE void batch_step(const R& reduce, const BatchInputs& in, BatchOutputs<OutT>& out) {
  using namespace detail;
  const int64_t k = in.k;
  const double kd = static_cast<double>(k);
  const Config cfg = in.config;
  const bool loo = cfg.control_variate == ControlVariate::kLoo;
  const double alpha = cfg.alpha;
  double* base = in.scratch;
  const Scratch sc{base, base + k, base + 2 * k, base + 3 * k, base + 4 * k, base + 5 * k,
                   base + 6 * k};
  const Common cm = prepare(reduce, in, sc);

  // Renyi and Tsallis at alpha exactly 0 or 1 are forward and reverse KL.
  Objective kind = cfg.objective;
  const bool alpha_family = kind == Objective::kRenyi || kind == Objective::kTsallis;
  if (alpha_family && alpha == 0.0) kind = Objective::kForwardKl;
  if (alpha_family && alpha == 1.0) kind = Objective::kReverseKl;

  // Skip rules, known before any coefficient is computed.
  bool skip = cm.skipped;
  if (k == 1 && is_self_normalised(cfg.objective, alpha, in.has_log_z)) skip = true;
  const double scale = cfg.paper_normalization && alpha_family ? alpha : 1.0;

  Result res{0.0, 0.0};
  const double* l = sc.l;
  if (kind == Objective::kTb) {
    const double log_z = in.log_z;
    const double mean_l = cm.mean_l;
    const double lf = loo_factor(k);
    write_cd(reduce, k, out, 1.0, skip, [&](int64_t i, double& c, double& d) {
      const double delta = log_z - l[i];
      c = loo ? -2.0 * (lf * (l[i] - mean_l)) / kd : 2.0 * delta / kd;
      d = -2.0 * delta / kd;
    });
    const double sum_delta = sum(reduce, k, [&](int64_t i) { return log_z - l[i]; });
    const double sum_sq = sum(reduce, k, [&](int64_t i) {
      const double delta = log_z - l[i];
      return delta * delta;
    });
    res.e = 2.0 * (sum_delta / kd);
    res.value = sum_sq / kd;
  } else if (kind == Objective::kVargrad) {
    const double mean_l = cm.mean_l;
    write_cd(reduce, k, out, 1.0, skip, [&](int64_t i, double& c, double& d) {
      const double centred = l[i] - mean_l;
      c = -2.0 * centred / kd;
      d = 2.0 * centred / kd;
    });
    const double sum_sq = sum(reduce, k, [&](int64_t i) {
      const double centred = l[i] - mean_l;
      return centred * centred;
    });
    res.value = sum_sq / kd;
  } else if (kind == Objective::kReverseKl) {
    const double mean_l = cm.mean_l;
    const double lf = loo_factor(k);
    write_cd(reduce, k, out, scale, skip, [&](int64_t i, double& c, double& d) {
      const double rho = rho_of(cm, sc, i);
      c = loo ? -rho * (lf * (l[i] - mean_l)) / kd : rho * (1.0 - l[i]) / kd;
      d = -rho / kd;
    });
    const double rho_l = sum(reduce, k, [&](int64_t i) { return rho_of(cm, sc, i) * l[i]; });
    const bool own_log_z = cfg.objective == Objective::kReverseKl && in.has_log_z;
    res.value = (own_log_z ? in.log_z : cm.log_z_hat) - rho_l / kd;
  } else if (kind == Objective::kForwardKl) {
    Tilt tilt = make_tilt(sc.w0, l, sc.lrho, cm.lse0, l, sc.t1, 0.0);
    tilt.prepare(reduce, k);
    const double* w0 = sc.w0;
    const double* pi = sc.pi;
    write_cd(reduce, k, out, scale, skip, [&](int64_t i, double& c, double& d) {
      c = loo ? -(w0[i] - pi[i]) : -w0[i];
      d = tilt.grad(i);
    });
    res.value = tilt.log_mgf - cm.log_z_hat;
  } else if (kind == Objective::kRenyi) {
    const double h = 1.0 - alpha;
    const double abs_alpha = dabs(alpha);
    // w = softmax(h l + log rho)
    double* w = sc.w;
    const double* lrho = sc.lrho;
    const double mw = max(reduce, k, [&](int64_t i) { return h * l[i] + lrho[i]; });
    const double w_sum = sum(reduce, k, [&](int64_t i) {
      const double e = mw == -inf() ? 0.0 : ::exp(h * l[i] + lrho[i] - mw);
      w[i] = e;
      return e;
    });
    // log pi = log rho - lse_rho and log w0 = l + log rho - lse0.
    Tilt pi_tilt = make_tilt(sc.pi, sc.lrho, nullptr, cm.lse_rho, l, sc.t1, h);
    if (loo || abs_alpha > 0.5) pi_tilt.prepare(reduce, k);
    Tilt w0_tilt = make_tilt(sc.w0, l, sc.lrho, cm.lse0, l, sc.t2, -alpha);
    if (abs_alpha <= 0.5) w0_tilt.prepare(reduce, k);  // exactly where renyi_d_blend is 1
    // d = -(w - beta w0) / alpha. With beta = 1 it is the w0 tilt, precise as alpha -> 0.
    const double beta = renyi_d_blend(alpha);
    const double* w0 = sc.w0;
    write_cd(reduce, k, out, scale, skip, [&](int64_t i, double& c, double& d) {
      const double wi = w[i] / w_sum;
      c = loo ? -pi_tilt.grad(i) : wi / (alpha - 1.0);
      d = beta == 1.0 ? w0_tilt.grad(i) : -(wi - beta * w0[i]) / alpha;
    });
    if (abs_alpha <= 0.5) {
      res.value = (w0_tilt.log_mgf - cm.log_z_hat) / h;
    } else {
      const double log_mean_rho = cm.lse_rho - ::log(kd);
      const double log_m_hat = log_mean_rho / h + pi_tilt.log_mgf;
      res.value = (cm.log_z_hat - log_m_hat) / alpha;
    }
  } else {  // tsallis
    const double h = 1.0 - alpha;
    const bool ref_is_batch = !in.has_log_z;
    const double ref = ref_is_batch ? cm.log_z_hat : in.log_z;
    const bool d_window = dabs(alpha) < kAlphaZeroWindow;
    const double lf = loo_factor(k);
    // -(g_alpha - g_0) / alpha with g_0 = exp(l - ref), times rho (0 where g_0 = 0).
    auto shifted = [&](int64_t i) {
      const double v = l[i] - ref;
      const double g0 = ::exp(v);
      return g0 > 0 ? rho_of(cm, sc, i) * g0 * expm1_over(-alpha * v, -alpha, v) : 0.0;
    };
    double mean_f = 0.0;
    if (loo) {
      mean_f = sum(reduce, k, [&](int64_t i) {
                 const double v = l[i] - ref;
                 const double f = expm1_over(h * v, h, v);
                 sc.t1[i] = f;
                 return f;
               }) /
               kd;
    }
    write_cd(reduce, k, out, scale, skip, [&](int64_t i, double& c, double& d) {
      const double rho = rho_of(cm, sc, i);
      const double g = ::exp(h * (l[i] - ref));
      // loo(g) / (alpha - 1) = -loo(expm1(t) / (1 - alpha)), stable near alpha = 1.
      c = loo ? -rho * (lf * (sc.t1[i] - mean_f)) / kd : rho * g / (kd * (alpha - 1.0));
      d = d_window ? shifted(i) / kd : -rho * g / (kd * alpha);
    });
    if (dabs(alpha) <= 0.5) {
      const double tilted = sum(reduce, k, shifted) / kd;
      const double offset = ref_is_batch ? 0.0 : ::expm1(cm.log_z_hat - ref);
      res.value = tilted / h + offset / (alpha * (alpha - 1.0));
    } else {
      const double moment = sum(reduce, k, [&](int64_t i) {
        const double v = l[i] - ref;
        return rho_of(cm, sc, i) * expm1_over(h * v, h, v);
      });
      const double mean_rho = sum(reduce, k, [&](int64_t i) { return rho_of(cm, sc, i); }) / kd;
      res.value = -(moment / kd) / alpha + (mean_rho - 1.0) / (alpha * (alpha - 1.0));
    }
  }
  // Tsallis with a learned log Z: e = 1 - mean_k rho_k exp(l_k - log Z).
  if (cfg.objective == Objective::kTsallis && in.has_log_z) {
    res.e = -::expm1(cm.log_z_hat - in.log_z);
  }
  out.e = skip ? 0.0 : res.e;
  out.value = cm.skipped ? 0.0 : res.value * scale;
  out.ess = cm.ess;
  out.log_z_hat = cm.log_z_hat;
  out.skipped = skip;
}

}  // namespace batch
}  // namespace gfn_fast
