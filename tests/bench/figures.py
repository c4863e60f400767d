"""How bench.py, switch_bench.py and vsock_bench.py write their figures: sizes,
rates, times and memory, and the statistics they take of their samples."""
import statistics

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def fmt_time(s):
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_rate(bps):
    return f"{bps / GIB:.2f} GiB/s" if bps >= GIB else f"{bps / MIB:.0f} MiB/s"


def fmt_mem(b):
    return f"{b / MIB:.2f} MiB" if b >= MIB else f"{b / KIB:.0f} KiB"


def fmt_size(b):
    if b % GIB == 0:
        return f"{b // GIB} GiB"
    return f"{b // MIB} MiB" if b % MIB == 0 else f"{b} B"


def fmt_pps(x):
    return f"{x / 1e6:.2f} Mpps" if x >= 1e5 else f"{x / 1e3:.1f} kpps"
