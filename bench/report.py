"""Ratios to the ceilings, the printed summary table, and the chart. Informational only: nothing here
fails a run (no timing assertions anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (name, numerator workload, numerator field, denominator, denominator field, target or None, meaning)
# field: "ops" = operations/s, "req" = HTTP requests/s, "items" = business items/s (ops/s x items_per_op),
# "p99" = p99 latency of operations.
RATIOS: list[tuple[str, str, str, str, str, float | None, str]] = [
    # targets of the ledger-core-v2 issue (#16)
    ("balance_read_vs_raw_get", "balance_read", "ops", "raw_get", "ops", 0.85, ">="),
    ("purchase_vs_raw_txn", "purchase", "ops", "raw_txn", "ops", 0.5, ">="),
    ("purchase_p99_vs_raw_txn_p99", "purchase", "p99", "raw_txn", "p99", 3.0, "<="),
    ("redeem_vs_raw_txn", "redeem", "ops", "raw_txn", "ops", 0.75, ">="),
    ("redeem_p99_vs_raw_txn_p99", "redeem", "p99", "raw_txn", "p99", None, "<="),
    ("redeem_vs_direct_sql_full", "redeem", "ops", "direct_redeem_full", "ops", 0.85, ">="),
    ("redeem_vs_direct_sql_fn", "redeem", "ops", "direct_redeem_fn", "ops", None, ">="),
    ("hold_capture_pairs_vs_raw_txn", "hold_capture", "ops", "raw_txn", "ops", 0.4, ">="),
    ("hold_capture_requests_vs_raw_txn", "hold_capture", "req", "raw_txn", "ops", None, ">="),
    ("hot_member_vs_spread_redeem", "hot_member", "ops", "redeem", "ops", 0.9, ">="),
    ("adjustment_vs_raw_txn", "adjustment", "ops", "raw_txn", "ops", None, ">="),
    # target of the rewards issue (#14): an exchange at least half a redeem
    # target of the offline-tills issue (#15): a batch posts at least 5x the purchases/s of single requests
    ("purchase_batch_items_vs_purchase", "purchase_batch", "items", "purchase", "ops", 5.0, ">="),
    ("exchange_vs_redeem", "exchange", "ops", "redeem", "ops", 0.5, ">="),
    ("exchange_vs_raw_txn", "exchange", "ops", "raw_txn", "ops", None, ">="),
    ("replay_10pct_vs_redeem", "replay_10pct", "ops", "redeem", "ops", None, ">="),
    ("mix_requests_vs_raw_txn", "mix", "req", "raw_txn", "ops", None, ">="),
    ("direct_fn_vs_raw_txn", "direct_redeem_fn", "ops", "raw_txn", "ops", None, ">="),
    # group commit on (the default) against off, same run
    ("redeem_group_commit_on_vs_off", "redeem", "ops", "redeem_no_group_commit", "ops", None, ">="),
    ("purchase_group_commit_on_vs_off", "purchase", "ops", "purchase_no_group_commit", "ops", None, ">="),
    ("hot_member_group_commit_on_vs_off", "hot_member", "ops", "hot_member_no_group_commit", "ops", None, ">="),
    ("hold_capture_group_commit_on_vs_off", "hold_capture", "ops", "hold_capture_no_group_commit", "ops", None, ">="),
    # the outbox (every write's events, in its transaction) against none, same run: the cost issue #13 bounds
    ("redeem_outbox_on_vs_off", "redeem", "ops", "redeem_no_outbox", "ops", 0.9, ">="),
    ("purchase_outbox_on_vs_off", "purchase", "ops", "purchase_no_outbox", "ops", 0.9, ">="),
    ("client_check_asyncio_vs_wrk_ping", "raw_ping", "ops", "wrk_raw_ping", "ops", None, ">="),
    ("client_check_asyncio_vs_wrk_raw_get", "raw_get", "ops", "wrk_raw_get", "ops", None, ">="),
    ("client_check_asyncio_vs_wrk_raw_txn", "raw_txn", "ops", "wrk_raw_txn", "ops", None, ">="),
    # the same service figures against the ceilings as measured by wrk (the leaner client)
    ("balance_read_vs_wrk_raw_get", "balance_read", "ops", "wrk_raw_get", "ops", None, ">="),
    ("redeem_vs_wrk_raw_txn", "redeem", "ops", "wrk_raw_txn", "ops", None, ">="),
    ("purchase_vs_wrk_raw_txn", "purchase", "ops", "wrk_raw_txn", "ops", None, ">="),
]


def _value(run: dict[str, Any] | None, field: str) -> float | None:
    if not run or run.get("skipped"):
        return None
    if field == "ops":
        value = run["ops"]["throughput"]
    elif field == "req":
        value = run["requests"]["throughput"]
    elif field == "items":  # business items/s: a batch request carries items_per_op purchases
        value = run["ops"]["throughput"] * run.get("items_per_op", 1)
    elif field == "p99":
        value = run["ops"]["latency_ms"]["p99"]
    else:
        raise ValueError(field)
    return None if value is None else float(value)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, num, nf, den, df, target, sense in RATIOS:
        a, b = _value(results.get(num), nf), _value(results.get(den), df)
        if a is None or b is None or not b:
            out[name] = {"value": None, "why": "not available"}
            continue
        value = round(a / b, 3)
        entry: dict[str, Any] = {"value": value, "numerator": f"{num}.{nf}={a}", "denominator": f"{den}.{df}={b}"}
        if target is not None:
            entry["target"] = f"{sense} {target}"
            entry["met"] = value >= target if sense == ">=" else value <= target
        out[name] = entry
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def table(results: dict[str, dict[str, Any]], titles: dict[str, str]) -> str:
    head = (f"{'workload':<34} {'ops/s':>9} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7} {'svc%':>6} {'pg%':>6} {'cli%':>6} {'other%':>6}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        title = titles.get(name, name)
        label = f"{title[:33]:<34}"
        if r.get("skipped"):
            lines.append(f"{label} {'not available: ' + r['skipped']}")
            continue
        lat = r["ops"]["latency_ms"]
        cpu = r.get("cpu", {})
        errors = sum(r.get("errors_by_status", {}).values()) if "errors_by_status" in r else r["ops"]["errors"]
        lines.append(
            f"{label} {_fmt(r['ops']['throughput']):>9} {_fmt(r['requests']['throughput']):>9} "
            f"{_fmt(lat['p50'], 2):>8} {_fmt(lat['p90'], 2):>8} {_fmt(lat['p99'], 2):>8} {errors:>7} "
            f"{_fmt(cpu.get('server_cpu_pct_of_one_core'), 0):>6} "
            f"{_fmt(cpu.get('postgres_cpu_pct_of_one_core'), 0):>6} "
            f"{_fmt(cpu.get('client_cpu_pct_of_one_core'), 0):>6} {_fmt(cpu.get('other_cpu_pct_of_one_core'), 0):>6}"
        )
    lines.append("CPU in % of one core during the window: svc = the server (service or raw app), pg = Postgres, "
                 "cli = load client,\nother = every other process on the machine (noise from other jobs)")
    return "\n".join(lines)


def ratio_lines(r: dict[str, Any]) -> str:
    out = []
    for name, e in r.items():
        if e["value"] is None:
            out.append(f"  {name:<36} -")
            continue
        target = f"  (target {e['target']}: {'met' if e['met'] else 'missed'})" if "target" in e else ""
        out.append(f"  {name:<36} {e['value']:.3f}{target}")
    return "\n".join(out)


def chart(results: dict[str, dict[str, Any]], titles: dict[str, str], ceilings: set[str], path: Path,
          subtitle: str) -> Path | None:
    """Throughput and p99 per workload, the ceilings beside them (grey)."""
    rows = [(n, r) for n, r in results.items() if not r.get("skipped")]
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [titles.get(n, n) for n, _ in rows]
    colors = ["#9e9e9e" if n in ceilings else ("#e08a2c" if r.get("mode") == "open" else "#2c6fbb")
              for n, r in rows]
    ops = [r["ops"]["throughput"] or 0 for _, r in rows]
    reqs = [r["requests"]["throughput"] or 0 for _, r in rows]
    p99 = [r["ops"]["latency_ms"]["p99"] or 0 for _, r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.45 * len(rows) + 2.2), sharey=True)
    y = list(range(len(rows)))
    ax1.barh(y, ops, color=colors)
    ax1.scatter(reqs, y, marker="|", s=200, color="black", zorder=3, label="HTTP requests/s (if ≠ ops)")
    for i, v in enumerate(ops):
        ax1.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    ax1.set_yticks(y, names, fontsize=9)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("operations per second, log scale (higher is better)")
    ax1.set_title("Throughput")
    ax1.legend(loc="lower right", fontsize=8)
    ax2.barh(y, p99, color=colors)
    for i, v in enumerate(p99):
        ax2.text(v, i, f" {v:,.1f}", va="center", fontsize=8)
    ax2.set_xlabel("p99 latency, ms (lower is better; open loop: corrected for coordinated omission)")
    ax2.set_title("p99 latency")
    from matplotlib.patches import Patch

    ax2.legend(handles=[Patch(color="#9e9e9e", label="ceiling / reference"),
                        Patch(color="#2c6fbb", label="service, closed loop"),
                        Patch(color="#e08a2c", label="service, open loop")], loc="lower right", fontsize=8)
    fig.suptitle(f"points-ledger benchmark — {subtitle}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
