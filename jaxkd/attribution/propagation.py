"""Layer-wise relevance propagation: rules, composites, and one explicit backward pass over a canonized model.

A *rule* says how one affine layer ``z = fwd(x, W) + b`` hands the relevance
``R`` of its outputs to its inputs; a *composite* is a table from layer kinds
to rules; the model is first canonized (:mod:`jaxkd.attribution.canonical`).
The three are separate, as in zennit: a new composite is a table.

Rules for affine layers (``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)``, likewise
``W⁺, W⁻, b⁺, b⁻``; ``Wᵀ`` the transposed map, computed as the VJP of ``fwd``;
``stab(z) = z + e · (sign(z) + [z = 0])``):

* ``epsilon``: ``R_in = x ⊙ Wᵀ(R / stab_ε(z))``, ``z = Wx + b`` (LRP-0 as ε → 0).
* ``gamma`` (zennit's generalised form, valid for inputs of either sign): with
  ``A = W + γW⁺`` and ``B = W + γW⁻``, outputs with ``z > 0`` share their
  relevance over the positive contributions ``z⁺ = A x⁺ + B x⁻ + b + γb⁺``
  and outputs with ``z < 0`` over the negative ones ``z⁻ = B x⁺ + A x⁻ + b + γb⁻``:
  ``R_in = x⁺ ⊙ (Aᵀ g⁺ + Bᵀ g⁻) + x⁻ ⊙ (Bᵀ g⁺ + Aᵀ g⁻)``, ``g^± = [±z > 0] R / stab(z^±)``.
  γ = 0 is LRP-0 (outputs with ``z = 0`` pass nothing).
* ``zplus``: ``R_in = x⁺ ⊙ W⁺ᵀ g + x⁻ ⊙ W⁻ᵀ g``, ``g = R / stab(W⁺x⁺ + W⁻x⁻ + b⁺)``.
* ``alpha2_beta1`` (α = 2, β = 1): ``α (x⁺ ⊙ W⁺ᵀ g⁺ + x⁻ ⊙ W⁻ᵀ g⁺) − β (x⁺ ⊙ W⁻ᵀ g⁻ + x⁻ ⊙ W⁺ᵀ g⁻)``,
  ``g⁺ = R / stab(W⁺x⁺ + W⁻x⁻ + b⁺)``, ``g⁻ = R / stab(W⁻x⁺ + W⁺x⁻ + b⁻)``.
* ``zbox`` (z^B, inputs known to lie in ``[l, h]``): ``g = R / stab(Wx − W⁺l − W⁻h)``,
  ``R_in = x ⊙ Wᵀg − l ⊙ W⁺ᵀg − h ⊙ W⁻ᵀg``.

Pass and norm rules: activations and unmerged BatchNorms pass relevance
unchanged; average pooling (windows, global, adaptive) and residual sums
share it in proportion to each input's contribution (``R_i = x_i Wᵀ(R / stab(Wx))``,
zennit's ``Norm``); max pooling hands it to the window's maximum (its gradient,
winner-take-all, which is zennit's default: its composites put no rule on max
pooling); reshapes move it.

The stabiliser ``epsilon`` belongs to the ε rule; every other rule uses
``stabilizer`` (both 1e-6 by default, as zennit).

References:
  Bach et al. 2015, PLoS ONE 10(7) e0130140 (LRP-0, ε, αβ);
  Montavon et al. 2017, arXiv 1512.02479 (z⁺, z^B);
  Montavon et al. 2019, "Layer-wise relevance propagation: an overview", §10.2 (γ, composites);
  Andéol et al. 2021, arXiv 2102.10617 (γ for negative inputs); zennit ``rules.py``, ``composites.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxkd.attribution.canonical import Elementwise, Linear, Network, Pool, Residual, canonize, first_linear
from jaxkd.attribution.outputs import OUTPUTS, check_classes, select_classes
from jaxkd.errors import ConfigError, check, check_name

# Layer kinds a composite maps, and the pass/norm rules every composite starts from.
BASE = {"activation": "pass", "batchnorm": "pass", "avgpool": "norm", "maxpool": "winner", "sum": "norm"}
COMPOSITES = {
    "epsilon_gamma_box": {"first": "zbox", "conv": "gamma", "dense": "epsilon"},
    "epsilon_plus": {"conv": "zplus", "dense": "epsilon"},
    "epsilon_alpha2_beta1": {"conv": "alpha2_beta1", "dense": "epsilon"},
    "epsilon": {"conv": "epsilon", "dense": "epsilon"},  # LRP-ε everywhere (LRP-0 as ε -> 0)
    "gamma": {"conv": "gamma", "dense": "gamma"},  # γ everywhere (LRP-0 at γ = 0)
}


def stabilize(z, e):
    """``z + e · (sign(z) + [z = 0])``: away from zero by ``e``, zero itself to ``+e`` (zennit's stabiliser)."""
    return z + e * (jnp.sign(z) + (z == 0).astype(z.dtype))


def _t(fwd, w, x, s):
    """``Wᵀ s``: the transposed linear map of ``fwd(·, w)`` applied to ``s`` (a VJP; ``fwd`` is linear in x)."""
    return jax.vjp(lambda v: fwd(v, w), x)[1](s)[0]


def _pos(a):
    return jnp.maximum(a, 0)


def _neg(a):
    return jnp.minimum(a, 0)


def rule_epsilon(fwd, x, w, b, r, hp):
    z = fwd(x, w) + b
    return x * _t(fwd, w, x, r / stabilize(z, hp["epsilon"]))


def rule_gamma(fwd, x, w, b, r, hp):
    g, e = hp["gamma"], hp["stabilizer"]
    a_w, b_w = w + g * _pos(w), w + g * _neg(w)
    xp, xn = _pos(x), _neg(x)
    z = fwd(x, w) + b
    z_pos = fwd(xp, a_w) + fwd(xn, b_w) + b + g * _pos(b)
    z_neg = fwd(xp, b_w) + fwd(xn, a_w) + b + g * _neg(b)
    g_pos = jnp.where(z > 0, r, 0) / stabilize(z_pos, e)
    g_neg = jnp.where(z < 0, r, 0) / stabilize(z_neg, e)
    return xp * (_t(fwd, a_w, x, g_pos) + _t(fwd, b_w, x, g_neg)) + xn * (
        _t(fwd, b_w, x, g_pos) + _t(fwd, a_w, x, g_neg)
    )


def rule_zplus(fwd, x, w, b, r, hp):
    wp, wn, xp, xn = _pos(w), _neg(w), _pos(x), _neg(x)
    g = r / stabilize(fwd(xp, wp) + fwd(xn, wn) + _pos(b), hp["stabilizer"])
    return xp * _t(fwd, wp, x, g) + xn * _t(fwd, wn, x, g)


def _alpha_beta(alpha, beta):
    def rule(fwd, x, w, b, r, hp):
        wp, wn, xp, xn = _pos(w), _neg(w), _pos(x), _neg(x)
        e = hp["stabilizer"]
        g_pos = r / stabilize(fwd(xp, wp) + fwd(xn, wn) + _pos(b), e)
        g_neg = r / stabilize(fwd(xp, wn) + fwd(xn, wp) + _neg(b), e)
        return alpha * (xp * _t(fwd, wp, x, g_pos) + xn * _t(fwd, wn, x, g_pos)) - beta * (
            xp * _t(fwd, wn, x, g_neg) + xn * _t(fwd, wp, x, g_neg)
        )

    return rule


def rule_zbox(fwd, x, w, b, r, hp):
    low = jnp.broadcast_to(jnp.asarray(hp["low"], x.dtype), x.shape)
    high = jnp.broadcast_to(jnp.asarray(hp["high"], x.dtype), x.shape)
    wp, wn = _pos(w), _neg(w)
    g = r / stabilize(fwd(x, w) - fwd(low, wp) - fwd(high, wn), hp["stabilizer"])
    return x * _t(fwd, w, x, g) - low * _t(fwd, wp, x, g) - high * _t(fwd, wn, x, g)


RULES = {
    "epsilon": rule_epsilon,
    "gamma": rule_gamma,
    "zplus": rule_zplus,
    "alpha2_beta1": _alpha_beta(2.0, 1.0),
    "alpha1_beta0": _alpha_beta(1.0, 0.0),
    "zbox": rule_zbox,
}
# Rules a parameter-free layer kind may take ("winner": the gradient, i.e. the window's maximum for max pooling,
# an equal share for average pooling).
PASS_RULES = {
    "activation": ("pass",),
    "batchnorm": ("pass", "norm"),
    "avgpool": ("norm", "winner"),
    "maxpool": ("winner", "norm"),
    "sum": ("norm",),
}


def resolve_composite(composite) -> tuple[tuple[str, str], ...]:
    """A composite's full table (``BASE`` and its own entries) as sorted pairs: a name or a mapping."""
    if isinstance(composite, str):
        check_name("LRP composite", composite, COMPOSITES)
        table = {**BASE, **COMPOSITES[composite]}
    elif isinstance(composite, Mapping) or isinstance(composite, tuple):
        table = {**BASE, **dict(composite)}
    else:
        raise ConfigError(f"composite must be a name ({', '.join(COMPOSITES)}) or a table, got {composite!r}")
    for kind in ("conv", "dense"):
        check(kind in table, f"the LRP composite table needs a rule for {kind!r} layers")
    known = {"first", "conv", "dense", *BASE}
    for kind, rule in table.items():
        check(kind in known, f"unknown layer kind {kind!r} in the LRP composite; known: {', '.join(sorted(known))}")
        allowed = tuple(RULES) if kind in ("first", "conv", "dense") else PASS_RULES[kind]
        check(rule in allowed, f"rule {rule!r} cannot apply to {kind!r} layers; choose one of: {', '.join(allowed)}")
    return tuple(sorted(table.items()))


def _record(layers, x):
    """Forward pass keeping each layer's input (and a residual's summands)."""
    saved = []
    for layer in layers:
        if isinstance(layer, Residual):
            a, rec_a = _record(layer.branch, x)
            s, rec_s = _record(layer.shortcut, x)
            saved.append((x, rec_a, rec_s, a, s))
            x = a + s
        else:
            saved.append(x)
            x = layer(x)
    return x, saved


def _norm(fn, x, r, e):
    out, vjp = jax.vjp(fn, x)
    if out.shape == x.shape:  # a pooling that did not pool
        return r
    return x * vjp(r / stabilize(out, e))[0]


def split_sum(a, s, r, e):
    """A residual sum's relevance ``r`` shared by its summands in proportion: ``(a r, s r) / stab(a + s)``."""
    r = r / stabilize(a + s, e)
    return a * r, s * r


def _propagate(layers, saved, r, table, first, hp, sums=None):
    """Relevance through ``layers`` (last to first); ``sums`` collects ``Σ r`` per example after each layer."""
    for layer, rec in zip(reversed(layers), reversed(saved)):
        if isinstance(layer, Residual):
            x, rec_a, rec_s, a, s = rec
            r_a, r_s = split_sum(a, s, r, hp["stabilizer"])
            r = _propagate(layer.branch, rec_a, r_a, table, first, hp) + _propagate(
                layer.shortcut, rec_s, r_s, table, first, hp
            )
        elif isinstance(layer, Linear):
            kind = "first" if (layer is first and "first" in table) else layer.kind
            r = RULES[table[kind]](layer.fwd, rec, layer.w, layer.b, r, hp)
        elif isinstance(layer, (Elementwise, Pool)):
            rule = "winner" if layer.kind == "reshape" else table[layer.kind]
            if rule == "pass":
                r = r.reshape(rec.shape)
            elif rule == "norm":
                r = _norm(layer.fwd, rec, r, hp["stabilizer"])
            else:  # the gradient: winner-take-all for max pooling, a move for a reshape
                r = jax.vjp(layer.fwd, rec)[1](r)[0]
        else:  # pragma: no cover - canonize builds only these
            raise TypeError(f"unknown layer {layer!r}")
        if sums is not None:
            sums.append(jnp.sum(r.reshape(r.shape[0], -1), axis=1))
    return r


def propagate(net: Network, x, e_BxC, table, hp, sums=None):
    """Relevance at the input for the explained output ``Σ_c e_c z_c`` (R_out = its value), and that value.

    The explained output is one more linear unit on top of the head
    (weights ``W e``, bias ``b·e``), whose own relevance is its value.
    ``sums`` (a list) collects the relevance per example after the head and
    after every top-level layer, from the output down.
    """
    h, saved = _record(net.body, net.prepare(x))
    head = net.head
    w_sel = e_BxC @ head.w.T  # [B, D]: one explained unit per example
    b_sel = e_BxC @ head.b.T  # [B, 1]
    f = jnp.sum(h * w_sel, axis=-1, keepdims=True) + b_sel
    unit = Linear("dense", w_sel, b_sel, lambda v, w: jnp.sum(v * w, axis=-1, keepdims=True))
    first = first_linear(net.body) or unit
    table = dict(table)
    kind = "first" if (first is unit and "first" in table) else "dense"
    r = RULES[table[kind]](unit.fwd, h, w_sel, b_sel, f, hp)
    if sums is not None:
        sums.append(jnp.sum(r, axis=1))
    r = _propagate(net.body, saved, r, table, first, hp, sums)
    return r.reshape(x.shape), f[:, 0]


@functools.partial(jax.jit, static_argnames=("model", "table", "output", "classes", "flow"))
def _lrp(model, params, rest, x, target, hp, *, table, output, classes, flow=False):
    net = canonize(model, params, rest)
    logits = net(x)
    e = select_classes(logits, target, output, classes)
    sums = [] if flow else None
    r, f = propagate(net, x, e, table, hp, sums)
    return (jnp.stack([f, *sums]), f) if flow else (r, f)


def lrp(
    model,
    params,
    rest,
    x,
    target,
    *,
    composite="epsilon_gamma_box",
    gamma: float = 0.25,
    epsilon: float = 1e-6,
    low=None,
    high=None,
    output: str = "gap",
    classes=None,
    stabilizer: float = 1e-6,
    return_output: bool = False,
):
    """LRP relevance of the input for the explained output of each example (the input's shape).

    The model (a :class:`~jaxkd.models.FunctionalModel`, in eval mode) is
    canonized (BatchNorm merged, residual sums explicit) and relevance flows
    from the explained output down, layer by layer, by the composite's rules.
    The relevance put on the explained output is its value ``f(x)``, so the
    input relevance sums to about ``f(x)`` (exactly, up to the stabilisers,
    when no layer's bias absorbs any and every rule conserves).

    Jitted; vmappable over ``params``/``rest`` (ensemble members) and inputs.

    Args:
      model, params, rest: the model and its eval-mode state.
      x: normalised inputs ``[B, ...]``.
      target: ``[B]`` int class explained per example.
      composite: a name in :data:`COMPOSITES` or a table ``{layer kind: rule}``
        (kinds ``first``, ``conv``, ``dense``, and those of :data:`BASE`).
      gamma: the γ rule's γ (SubDistill used 1; zennit's default 0.25).
      epsilon: the ε rule's stabiliser.
      low, high: the box ``[low, high]`` of the input for the z^B rule,
        scalars or per-channel (``box_bounds(mean, std)`` for normalised
        images); ``None`` means 0 and 1, the pixel range of un-normalised
        images. Inputs outside the box make z^B meaningless.
      output: the explained output, ``"gap"`` (``z_y − max_{c≠y} z_c``) or ``"logit"`` (``z_y``).
      classes: explain the model restricted to these logits (a subtask teacher,
        SubDistill's ``SubclassSelection``): ``target`` indexes into them and
        the runner-up is the largest other among them. ``None``: all logits.
      stabilizer: the stabiliser of every rule but ε (pooling and sums included).
      return_output: also return the explained output ``f(x)`` ``[B]``.
    """
    r, f = _lrp(
        model,
        params,
        rest,
        *_args(x, target, gamma, epsilon, stabilizer, low, high),
        **_static(composite, output, classes, model),
    )
    return (r, f) if return_output else r


def relevance_flow(
    model,
    params,
    rest,
    x,
    target,
    *,
    composite="epsilon_gamma_box",
    gamma: float = 0.25,
    epsilon: float = 1e-6,
    low=None,
    high=None,
    output: str = "gap",
    classes=None,
    stabilizer: float = 1e-6,
):
    """Total relevance per example at each stage of :func:`lrp`'s pass, ``[L + 2, B]``, from the output down.

    Row 0 is the explained output ``f(x)``, row 1 the relevance at the head's
    input, then one row after each top-level layer of the canonized model (a
    residual block is one layer), the last row at the input. A conservative
    rule keeps the rows equal; where they change, biases or stabilisers
    absorbed relevance (or a non-conservative rule such as αβ made it).
    """
    flow, _ = _lrp(
        model,
        params,
        rest,
        *_args(x, target, gamma, epsilon, stabilizer, low, high),
        **_static(composite, output, classes, model),
        flow=True,
    )
    return flow


def _static(composite, output, classes, model):
    check_name("explained output", output, OUTPUTS)
    return {"table": resolve_composite(composite), "output": output, "classes": check_classes(classes, model)}


def _args(x, target, gamma, epsilon, stabilizer, low, high):
    for name, v in (("gamma", gamma), ("epsilon", epsilon), ("stabilizer", stabilizer)):
        if not isinstance(v, jax.Array):
            check(v >= 0, f"LRP's {name} must be >= 0, got {v}")
    hp = {
        "gamma": jnp.asarray(gamma, jnp.float32),
        "epsilon": jnp.asarray(epsilon, jnp.float32),
        "stabilizer": jnp.asarray(stabilizer, jnp.float32),
        "low": jnp.asarray(0.0 if low is None else low, jnp.float32),
        "high": jnp.asarray(1.0 if high is None else high, jnp.float32),
    }
    x = jnp.asarray(x, jnp.float32)
    target = jnp.asarray(target, jnp.int32)
    check(
        target.shape == x.shape[:1], f"target must have one class per example, shape {x.shape[:1]}, got {target.shape}"
    )
    return x, target, hp


def box_bounds(mean=None, std=None):
    """``(low, high)``: the pixel range [0, 1] in normalised units, per channel: ``((0 − μ)/σ, (1 − μ)/σ)``."""
    mean = jnp.zeros(()) if mean is None else jnp.asarray(mean, jnp.float32)
    std = jnp.ones(()) if std is None else jnp.asarray(std, jnp.float32)
    return (0.0 - mean) / std, (1.0 - mean) / std
