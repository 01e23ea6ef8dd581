"""Event routing: crossbar nodes, synapse drivers and synapse address matching, vectorised.

`route(inputs, labels)` answers, for every (crossbar input, 14-bit label) pair at once, which
synaptic inputs the event reaches and with what current, and whether it reaches FPGA_RECORD:
- crossbar node (in, out) passes iff enabled and (label & mask) == target; several outputs may
  pass the same event;
- bus output o = 4h + b reaches driver d = 4 * label[10:6] + b of hemisphere h (the only driver on
  bus b whose row select d >> 2 equals label[10:6]) if that driver is enabled;
- both rows 2d, 2d+1 of the driver get the event; a row's mode says excitatory, inhibitory or
  disabled;
- a synapse (row, column) answers iff its 6-bit address equals label[5:0]; it adds
  weight * its DAC gain to the excitatory or inhibitory input of circuit (h, column).
Currents are in weight-DAC units here; the compiler multiplies the quadrant DAC and gm factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.addressmap import (
    CROSSBAR_ENABLE_BIT,
    CROSSBAR_MASK_SHIFT,
    N_BUSES,
    N_COLUMNS,
    N_HEMISPHERES,
    N_NEURONS,
    CrossbarOutput,
    DriverBits,
    RowMode,
    SynapseBits,
)

_LABEL14 = 0x3FFF


def decode_synapses(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw SYNAPSE words [2, 256, 128] -> (weight, address) each [2, 256 rows, 256 columns]."""
    w = np.asarray(words, np.uint32)
    halves = np.stack([w & 0xFFFF, w >> 16], axis=-1).reshape(w.shape[0], w.shape[1], -1)
    weight = (halves & SynapseBits.WEIGHT_MASK).astype(np.int64)
    address = ((halves >> SynapseBits.ADDRESS_SHIFT) & SynapseBits.ADDRESS_MASK).astype(np.int64)
    return weight, address


@dataclass(frozen=True)
class Router:
    """Routing state compiled from crossbar, driver and synapse registers."""

    xb_enable: np.ndarray  # [16 in, 16 out] bool
    xb_mask: np.ndarray  # [16, 16] int64
    xb_target: np.ndarray  # [16, 16] int64
    drv_enable: np.ndarray  # [2, 128] bool
    row_mode: np.ndarray  # [2, 256] RowMode per synapse row
    syn_current: np.ndarray  # [2, 256, 256] weight * DAC gain (float64)
    syn_address: np.ndarray  # [2, 256, 256] int64

    @staticmethod
    def compile(crossbar: np.ndarray, driver: np.ndarray, synapse: np.ndarray,
                synapse_gain: np.ndarray) -> Router:
        xb = np.asarray(crossbar, np.int64)
        drv = np.asarray(driver, np.int64)
        weight, address = decode_synapses(synapse)
        mode = np.stack([(drv >> DriverBits.ROW0_MODE_SHIFT) & 3,
                         (drv >> DriverBits.ROW1_MODE_SHIFT) & 3], axis=-1).reshape(2, -1)
        return Router(
            xb_enable=((xb >> CROSSBAR_ENABLE_BIT) & 1).astype(bool),
            xb_mask=(xb >> CROSSBAR_MASK_SHIFT) & _LABEL14,
            xb_target=xb & _LABEL14,
            drv_enable=((drv >> DriverBits.ENABLE) & 1).astype(bool),
            row_mode=mode,
            syn_current=weight * synapse_gain,
            syn_address=address,
        )

    def passes(self, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """[P, 16] bool: crossbar node (input, out) passes the label."""
        i = np.asarray(inputs, np.int64)
        lab = np.asarray(labels, np.int64)[:, None]
        return self.xb_enable[i] & ((lab & self.xb_mask[i]) == self.xb_target[i])

    def route(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(current [P, 512 circuits, 2 (exc, inh)] in weight units, record [P] bool)."""
        inputs = np.asarray(inputs, np.int64).reshape(-1)
        labels = np.asarray(labels, np.int64).reshape(-1)
        p = inputs.size
        out = np.zeros((p, N_NEURONS, 2))
        ok = self.passes(inputs, labels)
        record = ok[:, int(CrossbarOutput.FPGA_RECORD)].copy()
        select = (labels >> 6) & 0x1F
        address = labels & 0x3F
        for h in range(N_HEMISPHERES):  # 2 x 4 fixed iterations, vectorised over events
            for b in range(N_BUSES):
                hit = np.flatnonzero(ok[:, 4 * h + b])
                if hit.size == 0:
                    continue
                d = 4 * select[hit] + b
                hit, d = hit[self.drv_enable[h, d]], d[self.drv_enable[h, d]]
                for r in (0, 1):
                    row = 2 * d + r
                    mode = self.row_mode[h, row]
                    match = self.syn_address[h, row] == address[hit, None]  # [n, 256]
                    cur = self.syn_current[h, row] * match
                    cols = slice(h * N_COLUMNS, (h + 1) * N_COLUMNS)
                    for ch, m in ((0, RowMode.EXCITATORY), (1, RowMode.INHIBITORY)):
                        sel = mode == m
                        if sel.any():  # hit is unique within one (h, b, r)
                            out[hit[sel], cols, ch] += cur[sel]
        return out, record
