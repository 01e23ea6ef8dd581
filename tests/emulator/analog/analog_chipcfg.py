"""Test/bench helper: build a whole-chip register image with numpy and write it to a RegisterFile.

Writes go through RegisterFile.write_array (the board's access rules), never around them.
Also configures the PNAS MNIST network shape (pnas_network) for the speed bench.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.addressmap import (
    N_BACKGROUND,
    N_COLUMNS,
    Block,
    CrossbarInput,
    CrossbarOutput,
    DriverBits,
    NeuronCell,
    NeuronConfigBits,
    RowMode,
)

B = NeuronConfigBits


@dataclass
class ChipImage:
    capmem_neuron: np.ndarray = field(default_factory=lambda: np.zeros((512, 24), np.int64))
    capmem_global: np.ndarray = field(default_factory=lambda: np.zeros((4, 16), np.int64))
    word0: np.ndarray = field(default_factory=lambda: np.zeros(512, np.int64))
    word1: np.ndarray = field(default_factory=lambda: np.zeros(512, np.int64))
    weight: np.ndarray = field(default_factory=lambda: np.zeros((2, 256, 256), np.int64))
    syn_addr: np.ndarray = field(default_factory=lambda: np.zeros((2, 256, 256), np.int64))
    driver: np.ndarray = field(default_factory=lambda: np.zeros((2, 128), np.int64))
    crossbar: np.ndarray = field(default_factory=lambda: np.zeros((16, 9), np.int64))
    cadc_offset: np.ndarray = field(default_factory=lambda: np.zeros(512, np.int64))
    madc_config: int = 0
    background: np.ndarray = field(default_factory=lambda: np.zeros((N_BACKGROUND, 3), np.int64))

    # ---------------------------------------------------------------- helpers
    def neuron(self, circuits, *, fire=True, leak=True, exc=True, inh=True, adapt=False,
               exp=False, merge=False, spike_out=False, label=0, source=0, ref_count=0,
               ref_clock=0) -> None:
        c = np.atleast_1d(np.asarray(circuits))
        w = (fire << B.ENABLE_FIRE | leak << B.ENABLE_LEAK | exc << B.ENABLE_SYN_EXC
             | inh << B.ENABLE_SYN_INH | adapt << B.ENABLE_ADAPTATION
             | exp << B.ENABLE_EXPONENTIAL | merge << B.CONNECT_OTHER_HEMISPHERE
             | spike_out << B.SPIKE_OUTPUT | source << B.READOUT_SOURCE_SHIFT)
        self.word0[c] = w | (np.asarray(label) & 0x3FFF) << B.OUTPUT_LABEL_SHIFT
        self.word1[c] = ref_count | ref_clock << B.REFRACTORY_CLOCK_SHIFT

    def cells(self, circuits, **codes: int) -> None:
        c = np.atleast_1d(np.asarray(circuits))
        for name, v in codes.items():
            self.capmem_neuron[c, NeuronCell[name.upper()]] = v

    def node(self, inp: int, out: int, mask: int = 0, target: int = 0, enable=True) -> None:
        self.crossbar[int(inp), int(out)] = int(enable) << 31 | (mask & 0x3FFF) << 14 | (
            target & 0x3FFF)

    def drive(self, hemisphere: int, drv, mode0: RowMode, mode1: RowMode, enable=True) -> None:
        self.driver[hemisphere, drv] = (int(mode0) | int(mode1) << DriverBits.ROW1_MODE_SHIFT
                                        | int(enable) << DriverBits.ENABLE)

    # ---------------------------------------------------------------- writing
    def addresses_values(self) -> tuple[np.ndarray, np.ndarray]:
        a, v = [], []

        def add(block: Block, offsets: np.ndarray, values: np.ndarray) -> None:
            a.append((int(block) << 24) | offsets.reshape(-1))
            v.append(values.reshape(-1))

        n, c = np.meshgrid(np.arange(512), np.arange(24), indexing="ij")
        add(Block.CAPMEM_NEURON, n << 5 | c, self.capmem_neuron)
        q, c = np.meshgrid(np.arange(4), np.arange(16), indexing="ij")
        add(Block.CAPMEM_GLOBAL, q << 5 | c, self.capmem_global)
        add(Block.NEURON_CONFIG, np.arange(512) << 1, self.word0)
        add(Block.NEURON_CONFIG, np.arange(512) << 1 | 1, self.word1)
        half = (self.weight & 0x3F) | (self.syn_addr & 0x3F) << 8
        words = half[..., 0::2] | half[..., 1::2] << 16
        h, r, cc = np.meshgrid(np.arange(2), np.arange(256), np.arange(128), indexing="ij")
        add(Block.SYNAPSE, h << 15 | r << 7 | cc, words)
        h, d = np.meshgrid(np.arange(2), np.arange(128), indexing="ij")
        add(Block.DRIVER, h << 7 | d, self.driver)
        i, o = np.meshgrid(np.arange(16), np.arange(9), indexing="ij")
        add(Block.CROSSBAR, i << 4 | o, self.crossbar)
        add(Block.CADC_OFFSET, np.arange(512), self.cadc_offset & 0xFF)
        add(Block.MADC_CONFIG, np.zeros(1, np.int64), np.array([self.madc_config]))
        s, w = np.meshgrid(np.arange(N_BACKGROUND), np.arange(3), indexing="ij")
        add(Block.BACKGROUND, s << 2 | w, self.background)
        return np.concatenate(a), np.concatenate(v)

    def apply(self, regs) -> None:
        addrs, values = self.addresses_values()
        codes = regs.write_array(addrs.astype(np.uint64), values.astype(np.uint64))
        if codes.any():
            bad = np.flatnonzero(codes)[:5]
            raise AssertionError(f"refused writes at {[hex(int(x)) for x in addrs[bad]]}")


def loopback(img: ChipImage) -> None:
    img.node(CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD)


def lif_defaults(img: ChipImage, circuits, **over: int) -> None:
    """A LIF neuron with moderate time constants (codes chosen on the nominal curves)."""
    codes = dict(v_leak=600, v_reset=500, v_threshold=800, i_bias_leak=420,
                 i_bias_syn_exc_tau=420, i_bias_syn_inh_tau=420, i_bias_syn_exc_gm=500,
                 i_bias_syn_inh_gm=500)
    codes.update(over)
    img.cells(circuits, **codes)


def input_label(i: np.ndarray) -> np.ndarray:
    """FPGA label of PNAS input i: hemisphere i // 128 in bit 11, driver d = i % 128 as row
    select d >> 2 in [10:6] and bus d % 4 as the synapse address [1:0]."""
    i = np.asarray(i, np.int64)
    d = i % 128
    return (i // 128) << 11 | (d >> 2) << 6 | (d % 4)


def hidden_label(h: np.ndarray) -> np.ndarray:
    """On-chip label of hidden neuron h: like an input label, bit 12 set, address 4 + bus."""
    h = np.asarray(h, np.int64)
    d = h % 128
    return 1 << 12 | (h // 128) << 11 | (d >> 2) << 6 | 4 | (d % 4)


def pnas_network(img: ChipImage, rng: np.random.Generator, n_in: int = 256, n_hidden: int = 246,
                 n_out: int = 10, w1_sigma: float = 12.0, w2_sigma: float = 15.0
                 ) -> dict[str, np.ndarray]:
    """PNAS MNIST shape: n_in inputs -> n_hidden LIF -> n_out LI, two circuits per neuron.

    Input i owns the exc/inh row pair of driver i % 128 in hemisphere i // 128 (so each neuron's
    512 synapses, top and bottom column, see all 256 inputs). Hidden neuron h sends its spikes on
    the rows of driver h % 128 in hemisphere h // 128 with synapse address 4 + bus: the output
    columns' synapses carry that address, the hidden columns' the inputs' (bus), so one row serves
    an input and a hidden neuron (address matching). Hidden spikes are also recorded.
    Returns the signed weights (w1 [n_in, n_hidden], w2 [n_hidden, n_out]).
    """
    assert n_in <= 256 and n_hidden <= 256 and n_hidden + n_out <= N_COLUMNS
    hid = np.arange(n_hidden)
    out = n_hidden + np.arange(n_out)
    cols = np.concatenate([hid, out])
    lif_defaults(img, cols)
    lif_defaults(img, cols + 256)
    img.capmem_global[:, 0] = 700  # synapse DAC
    img.neuron(hid, merge=True, spike_out=True, label=hidden_label(hid), ref_count=60)
    img.neuron(hid + 256, merge=True, fire=False)
    img.neuron(out, merge=True, fire=False)
    img.neuron(out + 256, merge=True, fire=False)
    w1 = np.rint(rng.normal(0, w1_sigma, (n_in, n_hidden))).clip(-63, 63).astype(np.int64)
    w2 = np.rint(rng.normal(0, w2_sigma, (n_hidden, n_out))).clip(-63, 63).astype(np.int64)
    for h in (0, 1):
        img.drive(h, np.arange(128), RowMode.EXCITATORY, RowMode.INHIBITORY)
        for b in range(4):
            img.node(CrossbarInput.FPGA, 4 * h + b, mask=1 << 12 | 1 << 11 | 3,
                     target=h << 11 | b)
            for blk in (CrossbarInput.NEURONS_TOP_LEFT, CrossbarInput.NEURONS_TOP_RIGHT):
                img.node(blk, 4 * h + b, mask=1 << 12 | 1 << 11 | 3,
                         target=1 << 12 | h << 11 | b)
    img.node(CrossbarInput.NEURONS_TOP_LEFT, CrossbarOutput.FPGA_RECORD)
    img.node(CrossbarInput.NEURONS_TOP_RIGHT, CrossbarOutput.FPGA_RECORD)
    d_in = np.arange(n_in) % 128
    h_in = np.arange(n_in) // 128
    img.syn_addr[h_in[:, None], 2 * d_in[:, None], hid[None, :]] = (d_in % 4)[:, None]
    img.syn_addr[h_in[:, None], 2 * d_in[:, None] + 1, hid[None, :]] = (d_in % 4)[:, None]
    img.weight[h_in[:, None], 2 * d_in[:, None], hid[None, :]] = np.maximum(w1, 0)
    img.weight[h_in[:, None], 2 * d_in[:, None] + 1, hid[None, :]] = np.maximum(-w1, 0)
    d_h = hid % 128
    h_h = hid // 128
    img.syn_addr[h_h[:, None], 2 * d_h[:, None], out[None, :]] = 4 + (d_h % 4)[:, None]
    img.syn_addr[h_h[:, None], 2 * d_h[:, None] + 1, out[None, :]] = 4 + (d_h % 4)[:, None]
    img.weight[h_h[:, None], 2 * d_h[:, None], out[None, :]] = np.maximum(w2, 0)
    img.weight[h_h[:, None], 2 * d_h[:, None] + 1, out[None, :]] = np.maximum(-w2, 0)
    return {"w1": w1, "w2": w2}


def pnas_inputs(rng: np.random.Generator, n_episodes: int, n_in: int = 256, p_spike: float = 0.5,
                t_max_ticks: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latency-coded input: each input spikes once with probability p_spike, time uniform in
    [0, t_max_ticks). Returns (episode, time, label) sorted by (episode, time)."""
    on = rng.random((n_episodes, n_in)) < p_spike
    ep, i = np.nonzero(on)
    t = rng.integers(0, t_max_ticks, ep.size)
    o = np.lexsort((t, ep))
    return ep[o], t[o], input_label(i[o])
