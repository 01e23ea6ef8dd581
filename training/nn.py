"""Spiking layers and the Network container (PNAS 2022 model, exact exponential time stepping).

Units: the membrane is normalised so that leak = 0 and threshold = 1 (reset 0); currents are in
the same units (a constant current I drives V to I); times are seconds. Per time step dt:

    i_t = a i_{t-1} + W s_t                       a = exp(-dt / tau_syn)
    v_t = leak + b (v_{t-1} - leak) + c i_{t-1}    b = exp(-dt / tau_mem), c: exact integral
    z_t = H(v_t - threshold) ; v_t <- v_reset where z_t   (LIF only)

An input spike in step t lifts the current at t and reaches the membrane from step t+1, exactly as
the continuous system sampled at t*dt. With `substeps` K > 1 the network's input is on a K times
finer grid (dt / K, the timing a chip's FPGA plays spikes with): a spike at (t + m/K) dt reaches
the next sample t+1 as the exact jumps i += a(tau) w, v += c(tau) w of the continuous system with
tau = (1 - m/K) dt, so the sub-step timing a latency code carries is not rounded away.
Synaptic currents and the non-spiking readout are linear,
so they are computed for all steps at once with an impulse-response kernel; only the elementwise
LIF update runs per step. See training/backend.py for how measured values enter the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from protocol.errors import ConfigError, TrainingError
from training.backend import Backend, LayerObservation, Observations, resolve_backend

__all__ = [
    "DT",
    "N_STEPS",
    "TAU_MEM",
    "TAU_SYN",
    "WEIGHT_MAX",
    "LI",
    "LIF",
    "LayerTrace",
    "Linear",
    "Network",
    "NetworkOutput",
    "NeuronParams",
    "SuperSpike",
    "detuned",
    "pnas_network",
    "smooth_spike",
    "superspike",
]

DT = 1.7e-6  # CADC sample interval of PNAS 2022
N_STEPS = 20
TAU_MEM = 6e-6
TAU_SYN = 6e-6
WEIGHT_MAX = 63  # 6-bit magnitude of an excitatory/inhibitory synapse pair
BETA = 50.0
DROPOUT_SCOPES = ("sample", "batch")


# ---------------------------------------------------------------------------------------------
# surrogate spike functions


class SuperSpike(torch.autograd.Function):
    """Heaviside forward, SuperSpike backward: grad / (beta |v - theta| + 1)^2 (Zenke & Ganguli)."""

    @staticmethod
    def forward(ctx, v: Tensor, theta: Tensor, beta: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v, theta)
        ctx.beta = beta
        return (v > theta).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        v, theta = ctx.saved_tensors
        g = grad / (ctx.beta * (v - theta).abs() + 1.0) ** 2
        g_theta = None
        if ctx.needs_input_grad[1]:
            g_theta = -g.reshape(-1, theta.numel()).sum(0).reshape(theta.shape)
        return g, g_theta, None


def superspike(v: Tensor, theta: Tensor, beta: float = BETA) -> Tensor:
    """Spikes H(v - theta) with the SuperSpike surrogate gradient."""
    return SuperSpike.apply(v, theta, beta)


def smooth_spike(v: Tensor, theta: Tensor, beta: float = BETA) -> Tensor:
    """0.5 + x / (1 + beta |x|), x = v - theta: a smooth function whose exact derivative *is* the
    SuperSpike surrogate. Not a spiking model: it exists so that the network's backward pass can
    be checked against finite differences (gradcheck) with the surrogate's own shape."""
    x = v - theta
    return 0.5 + x / (1.0 + beta * x.abs())


SpikeFn = Callable[[Tensor, Tensor, float], Tensor]


# ---------------------------------------------------------------------------------------------
# neuron parameters and exact discretisation


@dataclass
class NeuronParams:
    """Per-neuron parameters of one layer, each a tensor [n] (seconds / model units)."""

    tau_mem: Tensor
    tau_syn: Tensor
    threshold: Tensor
    v_leak: Tensor
    v_reset: Tensor

    @property
    def size(self) -> int:
        return int(self.tau_mem.numel())

    def to(self, ref: Tensor) -> NeuronParams:
        """Same parameters on ref's device and dtype."""
        return NeuronParams(
            *(getattr(self, f).to(device=ref.device, dtype=ref.dtype) for f in _PARAM_FIELDS)
        )


_PARAM_FIELDS = ("tau_mem", "tau_syn", "threshold", "v_leak", "v_reset")


def detuned(
    params: NeuronParams,
    sigma: float,
    *,
    generator: torch.Generator | None = None,
    fields: Sequence[str] = ("tau_mem", "tau_syn", "threshold"),
) -> NeuronParams:
    """Copy of params with each listed field multiplied per neuron by (1 + sigma * N(0, 1)),
    floored at 5 % of the nominal value (the robustness experiment's sigma_d)."""
    out = replace(params)
    for f in fields:
        if f not in _PARAM_FIELDS:
            raise ConfigError(f"cannot detune {f!r}: fields are {_PARAM_FIELDS}")
        nominal = getattr(params, f)
        noise = torch.randn(nominal.shape, generator=generator, dtype=torch.float64)
        factor = (1.0 + sigma * noise).clamp(min=0.05).to(nominal.dtype)
        setattr(out, f, nominal * factor.to(nominal.device))
    return out


def _coefficients(p: NeuronParams, dt: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """a, b, c of the exact update; c = (dt/tau_mem) b (e^x - 1)/x, x = dt (1/tau_mem - 1/tau_syn),
    which stays exact and finite when tau_mem == tau_syn. dt may be a tensor [K, 1] of intervals
    (giving [K, n] coefficients): c(tau) is the membrane tau after a unit current jump."""
    a = torch.exp(-dt / p.tau_syn)
    b = torch.exp(-dt / p.tau_mem)
    x = dt * (1.0 / p.tau_mem - 1.0 / p.tau_syn)
    small = x.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(x), x)
    exprel = torch.where(small, 1.0 + x / 2.0, torch.expm1(safe) / safe)
    c = dt / p.tau_mem * b * exprel
    return a, b, c


def _toeplitz(r: Tensor) -> Tensor:
    """K[t, k, ...] = r[t - k, ...] for t >= k, else 0."""
    steps = r.shape[0]
    t = torch.arange(steps, device=r.device)
    lag = t[:, None] - t[None, :]
    mask = (lag >= 0).to(r.dtype).reshape(steps, steps, *([1] * (r.dim() - 1)))
    return r[lag.clamp(min=0)] * mask


def _drive_response(a: Tensor, c: Tensor, steps: int) -> Tensor:
    """Membrane drive per unit current jump d steps ago (before leak): 0, c, c a, c a^2, ..."""
    d = torch.arange(steps, device=a.device, dtype=a.dtype)
    r = c[None, :] * a[None, :] ** (d[:, None] - 1).clamp(min=0)
    return r * (d > 0).to(a.dtype)[:, None]


def _membrane_response(a: Tensor, b: Tensor, c: Tensor, steps: int) -> Tensor:
    """Membrane (no reset) d steps after a unit current jump: r_0 = 0, r_d = b r_{d-1} + c a^{d-1}.
    The loop runs over steps on [n] vectors, independent of the batch."""
    rows = [torch.zeros_like(a)]
    for d in range(1, steps):
        rows.append(b * rows[-1] + c * a ** (d - 1))
    return torch.stack(rows)


def _decay_response(b: Tensor, steps: int) -> Tensor:
    """Membrane d steps after a unit membrane jump: b^d, d = 0..steps-1, [steps, n]."""
    d = torch.arange(steps, device=b.device, dtype=b.dtype)
    return b[None, :] ** d[:, None]


def _substep_inputs(
    linear: Linear, x: Tensor, p: NeuronParams, dt: float, substeps: int
) -> tuple[Tensor, Tensor]:
    """Fine-grid input spikes [T*K, B, n_in] -> (current jumps, membrane jumps), each [T, B, n],
    on the neuron grid: a spike in sub-step m of step t lands at step t+1 with weights
    a(tau), c(tau), tau = (1 - m/K) dt (spikes in the last step land after the window).
    Where the layer's neurons share their time constants the sub-steps are folded before the
    projection (two coarse matmuls); otherwise after it, per neuron (exact, K times the cost)."""
    k = substeps
    steps = x.shape[0] // k
    tau = dt * (1.0 - torch.arange(k, dtype=torch.float64, device=p.tau_mem.device) / k)
    shared = bool((p.tau_mem == p.tau_mem[0]).all() and (p.tau_syn == p.tau_syn[0]).all())
    if shared:
        p1 = NeuronParams(*(getattr(p, f)[:1].to(torch.float64) for f in _PARAM_FIELDS))
        a, _, c = _coefficients(p1, tau[:, None])  # [K, 1]
        w = torch.cat([a, c], dim=1).t().to(x)  # [2, K]
        folded = torch.einsum("tkbp,jk->jtbp", x.reshape(steps, k, *x.shape[1:]), w)
        jumps = linear(folded.reshape(2 * steps, *x.shape[1:])).reshape(2, steps, x.shape[1], -1)
        cur, mem = jumps[0], jumps[1]
    else:
        a, _, c = _coefficients(p.to(tau), tau[:, None])  # [K, n]
        h = linear(x).reshape(steps, k, x.shape[1], -1)
        cur = torch.einsum("tkbn,kn->tbn", h, a.to(h))
        mem = torch.einsum("tkbn,kn->tbn", h, c.to(h))
    return _delay_one_step(cur), _delay_one_step(mem)


def _delay_one_step(u: Tensor) -> Tensor:
    return torch.cat([torch.zeros_like(u[:1]), u[:-1]])


def _causal_filter(r: Tensor, u: Tensor) -> Tensor:
    """out[t] = sum_{k <= t} r[t - k] * u[k] for u [T, B, n] and a per-neuron response r [T, n].
    One matmul when all neurons share the response (the usual case), a batched one otherwise."""
    steps = u.shape[0]
    if bool((r == r[:, :1]).all()):
        kernel = _toeplitz(r[:, 0])
        return (kernel @ u.reshape(steps, -1)).reshape(u.shape)
    return torch.einsum("tkn,kbn->tbn", _toeplitz(r), u)


# ---------------------------------------------------------------------------------------------
# layers


class Linear(nn.Module):
    """Signed all-to-all projection, spikes [T, B, n_in] -> currents [T, B, n_out].

    Weights are in model units (a current jump of w per input spike). With quantize=True the
    forward pass uses w_q = scale * round(clamp(w / scale, -63, 63)) (the chip's +-63 signed
    synapse pair) with a straight-through estimator; learn_scale makes the scale a parameter
    (LSQ-style gradient). `integer_weights()` is what a board backend writes.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        quantize: bool = False,
        scale: float = 1.0 / 16,
        learn_scale: bool = False,
        init_mean: float = 0.0,
        init_std: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_in <= 0 or n_out <= 0:
            raise ConfigError(f"Linear sizes must be positive, got ({n_in}, {n_out})")
        if scale <= 0:
            raise ConfigError(f"Linear weight scale must be > 0, got {scale}")
        self.n_in, self.n_out, self.quantize = n_in, n_out, quantize
        std = init_std if init_std is not None else 4.0 / n_in**0.5
        w = torch.randn(n_out, n_in, generator=generator) * std + init_mean
        self.weight = nn.Parameter(w)
        s = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(s)
        else:
            self.register_buffer("scale", s)

    def effective_weight(self) -> Tensor:
        """The weight the forward pass uses (quantised if enabled)."""
        if not self.quantize:
            return self.weight
        s = self.scale.abs().clamp(min=1e-12)
        u = (self.weight / s).clamp(-WEIGHT_MAX, WEIGHT_MAX)
        return s * (u + (torch.round(u) - u).detach())

    def integer_weights(self) -> Tensor:
        """Weights as signed integers in [-63, 63] at the current scale, [n_out, n_in]."""
        s = self.scale.detach().abs().clamp(min=1e-12)
        return torch.round(self.weight.detach() / s).clamp(-WEIGHT_MAX, WEIGHT_MAX).to(torch.int8)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep weights inside the representable range (called after optimiser steps)."""
        limit = WEIGHT_MAX * float(self.scale.abs())
        self.weight.clamp_(-limit, limit)

    def forward(self, spikes: Tensor) -> Tensor:
        return spikes @ self.effective_weight().t()

    def extra_repr(self) -> str:
        return f"{self.n_in}, {self.n_out}, quantize={self.quantize}"


class _NeuronLayer(nn.Module):
    """Shared parameter handling: per-neuron buffers (so they can be detuned or calibrated)."""

    spiking = False

    def __init__(
        self,
        size: int,
        *,
        tau_mem: float | Tensor = TAU_MEM,
        tau_syn: float | Tensor = TAU_SYN,
        threshold: float | Tensor = 1.0,
        v_leak: float | Tensor = 0.0,
        v_reset: float | Tensor = 0.0,
    ) -> None:
        super().__init__()
        if size <= 0:
            raise ConfigError(f"neuron layer size must be positive, got {size}")
        self.size = size
        for name, value in zip(
            _PARAM_FIELDS, (tau_mem, tau_syn, threshold, v_leak, v_reset), strict=True
        ):
            t = torch.as_tensor(value, dtype=torch.float32).clone()
            t = t.expand(size).clone() if t.dim() == 0 else t
            if t.shape != (size,):
                raise ConfigError(
                    f"{name} must be a scalar or have shape ({size},), got {tuple(t.shape)}"
                )
            if name.startswith("tau") and not bool((t > 0).all()):
                raise ConfigError(f"{name} must be > 0 for every neuron")
            self.register_buffer(name, t)

    def params(self) -> NeuronParams:
        return NeuronParams(*(getattr(self, f) for f in _PARAM_FIELDS))

    def set_params(self, params: NeuronParams) -> None:
        """Overwrite the per-neuron parameters in place (e.g. with detuned or calibrated ones)."""
        if params.size != self.size:
            raise ConfigError(
                f"parameters for {params.size} neurons given to a layer of {self.size}"
            )
        for f in _PARAM_FIELDS:
            getattr(self, f).copy_(getattr(params, f))

    def extra_repr(self) -> str:
        return str(self.size)


class LIF(_NeuronLayer):
    """Leaky integrate-and-fire with current-based exponential synapses; reset to v_reset.

    beta: SuperSpike steepness. dropout: probability of silencing a neuron's output for a whole
    sample in training (no rescaling, so the same masks can be realised on a chip).
    dropout_scope: "sample" draws a mask per sample; "batch" one mask shared by the batch, which
    a board realises by zeroing the silenced neurons' outgoing synapses for that batch's program.
    spike_fn / detach_reset exist for gradient verification (see smooth_spike).
    """

    spiking = True

    def __init__(
        self,
        size: int,
        *,
        beta: float = BETA,
        dropout: float = 0.0,
        dropout_scope: str = "sample",
        spike_fn: SpikeFn = superspike,
        detach_reset: bool = True,
        **params: float | Tensor,
    ) -> None:
        super().__init__(size, **params)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if dropout_scope not in DROPOUT_SCOPES:
            raise ConfigError(
                f"dropout_scope must be one of {DROPOUT_SCOPES}, got {dropout_scope!r}"
            )
        self.beta, self.dropout, self.dropout_scope = beta, dropout, dropout_scope
        self.spike_fn, self.detach_reset = spike_fn, detach_reset

    def forward(
        self,
        current: Tensor,
        *,
        dt: float,
        observation: LayerObservation | None = None,
        params: NeuronParams | None = None,
        direct: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """current: synaptic input jumps [T, B, n]; direct: membrane jumps [T, B, n] added to
        v_t (sub-step input, see _substep_inputs). Returns (spikes, membrane), both [T, B, n],
        the membrane before reset. Measured values replace the model's step by step."""
        p = (params or self.params()).to(current)
        a, b, c = _coefficients(p, dt)
        steps = current.shape[0]
        # drive[t]: leak and synaptic contributions to v_t, so that v_t = b v_{t-1} + drive[t]
        drive = _causal_filter(_drive_response(a, c, steps), current) + p.v_leak * (1.0 - b)
        if direct is not None:
            drive = drive + direct
        m_obs = observation.membrane if observation is not None else None
        z_obs = observation.spikes if observation is not None else None
        v = p.v_leak.expand_as(current[0])
        vs, zs = [], []
        # unbind once: indexing drive[t] would cost a full-size zero tensor per step in backward
        for t, drive_t in enumerate(drive.unbind(0)):
            v = torch.addcmul(drive_t, b, v)
            if m_obs is not None:
                v = v + (m_obs[t] - v).detach()
            z = self.spike_fn(v, p.threshold, self.beta)
            if z_obs is not None:
                z = z + (z_obs[t] - z).detach()
            vs.append(v)
            zs.append(z)
            v = torch.lerp(v, p.v_reset.expand_as(v), z.detach() if self.detach_reset else z)
        return torch.stack(zs), torch.stack(vs)

    def extra_repr(self) -> str:
        return (
            f"{self.size}, beta={self.beta}, dropout={self.dropout}, scope={self.dropout_scope}"
        )


class LI(_NeuronLayer):
    """Leaky integrator readout (threshold disabled): membrane [T, B, n], fully vectorised."""

    def forward(
        self,
        current: Tensor,
        *,
        dt: float,
        observation: LayerObservation | None = None,
        params: NeuronParams | None = None,
        direct: Tensor | None = None,
    ) -> tuple[None, Tensor]:
        p = (params or self.params()).to(current)
        a, b, c = _coefficients(p, dt)
        v = p.v_leak + _causal_filter(_membrane_response(a, b, c, current.shape[0]), current)
        if direct is not None:
            v = v + _causal_filter(_decay_response(b, current.shape[0]), direct)
        if observation is not None and observation.membrane is not None:
            # LI is linear, so substituting the whole trace equals per-step substitution
            v = v + (observation.membrane - v).detach()
        return None, v


NeuronLayer = LIF | LI


# ---------------------------------------------------------------------------------------------
# network


@dataclass
class LayerTrace:
    """One neuron layer's traces: index in Network.layers, spikes (LIF; None for LI) and membrane,
    each [T, B, n]. spikes are the neurons' own (before any dropout mask)."""

    index: int
    spikes: Tensor | None
    membrane: Tensor


@dataclass
class NetworkOutput:
    """Result of a forward pass: readout membrane plus every neuron layer's traces."""

    readout: Tensor
    traces: list[LayerTrace]
    masks: dict[int, Tensor] = field(default_factory=dict)

    @property
    def hidden_spikes(self) -> list[Tensor]:
        """Spikes [T, B, n] of every spiking layer, in order."""
        return [tr.spikes for tr in self.traces if tr.spikes is not None]

    @property
    def membranes(self) -> list[Tensor]:
        return [tr.membrane for tr in self.traces]

    def spike_counts(self) -> Tensor:
        """Total hidden spikes per sample [B]."""
        spikes = self.hidden_spikes
        if not spikes:
            return torch.zeros(self.readout.shape[1], device=self.readout.device)
        return sum(s.sum(dim=(0, 2)) for s in spikes)  # type: ignore[return-value]


class Network(nn.Module):
    """A feed-forward stack Linear, neuron, Linear, neuron, ... on a common time grid.

    A new network runs in software ("sim"); `connect` moves its forward pass elsewhere.
    substeps K: the input spikes come on a K times finer grid than the neurons' (x has K time
    steps per neuron step; training.data.Encoding(substeps=K) makes such inputs).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        dt: float = DT,
        n_steps: int = N_STEPS,
        substeps: int = 1,
    ) -> None:
        super().__init__()
        _validate(layers)
        if dt <= 0 or n_steps <= 0 or substeps <= 0:
            raise ConfigError(
                f"dt, n_steps and substeps must be positive, got dt={dt}, n_steps={n_steps}, "
                f"substeps={substeps}"
            )
        self.layers = nn.ModuleList(layers)
        self.dt, self.n_steps, self.substeps = dt, n_steps, substeps
        self.backend: Backend = resolve_backend("sim")

    # -- structure ------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].size

    def linear_layers(self) -> list[tuple[int, Linear]]:
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, Linear)]

    def neuron_layers(self) -> list[tuple[int, LIF | LI]]:
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, LIF | LI)]

    def weights(self) -> list[nn.Parameter]:
        return [m.weight for _, m in self.linear_layers()]

    def clamp_weights_(self) -> None:
        """Clamp quantised layers' weights to +-63 * scale (after each optimiser step)."""
        for _, m in self.linear_layers():
            if m.quantize:
                m.clamp_()

    def describe(self) -> dict:
        """Architecture as plain data (stored in checkpoints to refuse mismatched loads)."""
        out = []
        for m in self.layers:
            if isinstance(m, Linear):
                out.append(
                    {"kind": "Linear", "n_in": m.n_in, "n_out": m.n_out, "quantize": m.quantize}
                )
            else:
                out.append({"kind": type(m).__name__, "size": m.size})
        d = {"layers": out, "dt": self.dt, "n_steps": self.n_steps}
        if self.substeps != 1:  # absent for 1, so older checkpoints still match
            d["substeps"] = self.substeps
        return d

    # -- backends -------------------------------------------------------------------------------
    def connect(self, target: object = "sim") -> Network:
        """Run the forward pass on target: "sim" or a training.backend.Backend (board backend)."""
        backend = resolve_backend(target)
        backend.attach(self)
        if self.backend is not backend:
            self.backend.detach()
        self.backend = backend
        return self

    # -- forward --------------------------------------------------------------------------------
    def sample_masks(self, batch: int, device: torch.device | None = None) -> dict[int, Tensor]:
        """Dropout masks [batch, n] per LIF layer with dropout > 0 (only in training mode); a
        layer with dropout_scope "batch" gets one row repeated for the whole batch."""
        if not self.training:
            return {}
        masks = {}
        for i, m in self.neuron_layers():
            if isinstance(m, LIF) and m.dropout > 0:
                rows = 1 if m.dropout_scope == "batch" else batch
                mask = (torch.rand(rows, m.size, device=device) >= m.dropout).float()
                masks[i] = mask.expand(batch, m.size)
        return masks

    def forward(self, x: Tensor) -> NetworkOutput:
        """x: input spikes [time * substeps, batch, n_in]; runs on the connected backend."""
        x = self._check_input(x)
        masks = self.sample_masks(x.shape[1], x.device)
        observations = self.backend.observe(self, x, masks)
        return self.simulate(x, masks=masks, observations=observations)

    def simulate(
        self,
        x: Tensor,
        *,
        masks: dict[int, Tensor] | None = None,
        observations: Observations | None = None,
        neuron_params: dict[int, NeuronParams] | None = None,
    ) -> NetworkOutput:
        """The model's forward pass; observations (from a backend) replace its spikes/membranes,
        neuron_params override layers' parameters (a substrate with other neurons)."""
        x = self._check_input(x)
        masks = masks or {}
        observations = observations or {}
        neuron_params = neuron_params or {}
        h, traces = x, []
        direct: Tensor | None = None
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                if i == 0 and self.substeps > 1:
                    nxt = self.layers[1]
                    p = (neuron_params.get(1) or nxt.params()).to(x)
                    h, direct = _substep_inputs(layer, h, p, self.dt, self.substeps)
                else:
                    h = layer(h)
                continue
            obs = observations.get(i)
            if obs is not None:
                _check_observation(i, obs, h.shape, layer)
            spikes, membrane = layer(
                h, dt=self.dt, observation=obs, params=neuron_params.get(i), direct=direct
            )
            direct = None
            traces.append(LayerTrace(i, spikes, membrane))
            h = spikes if spikes is not None else membrane
            if i in masks:
                h = h * masks[i].to(h)
        return NetworkOutput(readout=traces[-1].membrane, traces=traces, masks=masks)

    def _check_input(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[2] != self.n_in:
            raise ConfigError(
                f"input spikes must be [time, batch, {self.n_in}], got {tuple(x.shape)}"
            )
        if self.substeps > 1 and x.shape[0] != self.n_steps * self.substeps:
            raise ConfigError(
                f"input spikes have {x.shape[0]} time steps; this network takes "
                f"{self.n_steps} steps of {self.substeps} substeps ({self.n_steps * self.substeps};"
                f" build the data with Encoding(substeps={self.substeps}))"
            )
        return x.to(self.layers[0].weight.dtype)


def _validate(layers: Sequence[nn.Module]) -> None:
    if not layers:
        raise ConfigError("a Network needs layers, e.g. [Linear(256, 246), LIF(246), ...]")
    n = None
    for i, m in enumerate(layers):
        expect_linear = i % 2 == 0
        if expect_linear and not isinstance(m, Linear):
            raise ConfigError(f"layer {i} must be a Linear (layers alternate Linear, neuron layer)")
        if not expect_linear and not isinstance(m, LIF | LI):
            raise ConfigError(
                f"layer {i} must be a LIF or LI (layers alternate Linear, neuron layer)"
            )
        if isinstance(m, Linear):
            if n is not None and m.n_in != n:
                raise ConfigError(
                    f"layer {i}: Linear expects {m.n_in} inputs, previous layer has {n}"
                )
            n = m.n_out
        else:
            if m.size != n:
                raise ConfigError(f"layer {i}: {type(m).__name__}({m.size}) follows {n} outputs")
    if not isinstance(layers[-1], LIF | LI):
        raise ConfigError("the last layer must be a neuron layer (LIF or LI)")
    for i, m in enumerate(layers[:-1]):
        if isinstance(m, LI):
            raise ConfigError(f"layer {i}: LI emits no spikes, so it can only be the last layer")


def _check_observation(
    index: int, obs: LayerObservation, shape: torch.Size, layer: nn.Module
) -> None:
    for name, t in (("spikes", obs.spikes), ("membrane", obs.membrane)):
        if t is None:
            continue
        if tuple(t.shape) != tuple(shape):
            raise TrainingError(
                f"backend observation {name} for layer {index} has shape {tuple(t.shape)}, "
                f"the model's is {tuple(shape)} (time, batch, neurons)"
            )
    if obs.spikes is not None and not isinstance(layer, LIF):
        raise TrainingError(f"backend reported spikes for layer {index}, which is not a LIF layer")


def pnas_network(
    n_in: int = 256,
    n_hidden: int = 246,
    n_out: int = 10,
    *,
    dropout: float = 0.0,
    dropout_scope: str = "sample",
    quantize: bool = False,
    scale: float = 1.0 / 16,
    seed: int | None = None,
    dt: float = DT,
    n_steps: int = N_STEPS,
    substeps: int = 1,
) -> Network:
    """Linear -> LIF -> Linear -> LI (PNAS 2022) with a tested initialisation.

    The readout weights start with a positive mean: a readout neuron whose membrane never rises
    above its resting value has its max-over-time at a step before any input, where the gradient
    is zero, so its class could never be learnt.
    """
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return Network(
        [
            Linear(
                n_in,
                n_hidden,
                init_std=4.0 / n_in**0.5,
                quantize=quantize,
                scale=scale,
                generator=g,
            ),
            LIF(n_hidden, dropout=dropout, dropout_scope=dropout_scope),
            Linear(
                n_hidden,
                n_out,
                init_mean=1.0 / n_hidden**0.5,
                init_std=2.0 / n_hidden**0.5,
                quantize=quantize,
                scale=scale,
                generator=g,
            ),
            LI(n_out),
        ],
        dt=dt,
        n_steps=n_steps,
        substeps=substeps,
    )
