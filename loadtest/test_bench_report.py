"""The ratios `make bench` prints: alternating pairs are read by round, each comparison reports the median of its
pairs' ratios (the gateway against the bare servers, and batched against unbatched), and older report folders (one
unnumbered pair) still read. Run by `make test-python`."""

import contextlib
import io
import json
import os
import tempfile
import unittest

import bench_report


def write(folder, name, **report):
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(report, f)


def report(folder):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_report.main(folder)
    return out.getvalue()


class ClosedLoopRounds(unittest.TestCase):
    def test_median_of_the_pairs_ratios_with_each_listed(self):
        with tempfile.TemporaryDirectory() as d:
            # Ratios 0.60, 0.94 and 0.93: the median pair ratio is 0.93, while the ratio of the medians would be 0.90.
            for r, (g, b) in enumerate([(42000, 70000), (66000, 70000), (63000, 68000)], 1):
                write(d, f"cmp-v1-grpc-gateway-r{r}", achieved_rps=g)
                write(d, f"cmp-v1-grpc-bare-r{r}", achieved_rps=b)
            text = report(d)
            row = next(line for line in text.splitlines() if "v1, GRPC" in line)
            self.assertIn("medians of 3 pairs; each ratio: 0.60, 0.94, 0.93", row)
            self.assertIn("| 63,000 | 70,000 | 0.93 |", row)
            with open(os.path.join(d, "bench.svg")) as f:
                self.assertIn("v1 GRPC (0.93 x)", f.read())

    def test_a_round_missing_a_side_is_left_out(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "cmp-v2-http-gateway-r1", achieved_rps=90)
            write(d, "cmp-v2-http-bare-r1", achieved_rps=100)
            write(d, "cmp-v2-http-gateway-r2", achieved_rps=10)
            row = next(line for line in report(d).splitlines() if "v2, HTTP" in line)
            self.assertIn("| 90 | 100 | 0.90 |", row)
            self.assertNotIn("medians of", row)

    def test_older_reports_with_one_unnumbered_pair_still_read(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "cmp-v1-http-gateway", achieved_rps=920)
            write(d, "cmp-v1-http-bare", achieved_rps=1000)
            for name, p99 in (("gateway", 0.6), ("bare", 0.5)):
                write(d, f"cmp-open-8333-v1-http-{name}", latency_ms={"p50": 0.2, "p99": p99})
            text = report(d)
            self.assertIn("| closed loop, 64 connections, v1, HTTP: req/s | 920 | 1,000 | 0.92 | >= 1.0 |", text)
            self.assertIn("p99 ms (median of 1 pair; each: 1.20) | 0.600 | 0.500 | 1.20 | <= 1.2 |", text)

    def test_open_loop_pairs_of_both_protocols(self):
        with tempfile.TemporaryDirectory() as d:
            for r, (g, b) in enumerate([(0.9, 0.8), (1.2, 1.0), (0.7, 0.7)], 1):
                write(d, f"cmp-open-8333-v1-grpc-gateway-r{r}", latency_ms={"p50": 0.3, "p99": g})
                write(d, f"cmp-open-8333-v1-grpc-bare-r{r}", latency_ms={"p50": 0.3, "p99": b})
            text = report(d)
            self.assertIn("| open loop 8,333 req/s, v1, GRPC: p99 ms (median of 3 pairs; each: 1.12, 1.20, 1.00) "
                          "| 0.900 | 0.800 | 1.12 | <= 1.2 |", text)
            self.assertNotIn("v1, HTTP", text)


class Batching(unittest.TestCase):
    def test_median_of_the_pairs_for_throughput_and_p99_against_the_goals(self):
        with tempfile.TemporaryDirectory() as d:
            # Throughput ratios 2.10, 1.50 and 2.05 (median 2.05); p99 ratios 0.50, 1.20 and 0.40 (median 0.50).
            for r, (b, u, b99, u99) in enumerate([(84000, 40000, 1.0, 2.0), (60000, 40000, 2.4, 2.0),
                                                  (82000, 40000, 1.2, 3.0)], 1):
                write(d, f"cmp-digits-batched-r{r}", predictions_per_s=b, latency_ms={"p99": b99})
                write(d, f"cmp-digits-unbatched-r{r}", predictions_per_s=u, latency_ms={"p99": u99})
            text = report(d)
            self.assertIn("| dynamic batching, digits MLP, 64 one-row clients | batched | unbatched | ratio | goal |",
                          text)
            self.assertIn("| predictions/s (median of 3 pairs; each ratio: 2.10, 1.50, 2.05) | 82,000 | 40,000 | 2.05 "
                          "| >= 2.0 |", text)
            self.assertIn("| p99 ms (median of 3 pairs; each ratio: 0.50, 1.20, 0.40) | 1.200 | 2.000 | 0.50 "
                          "| <= 1.0 |", text)

    def test_older_reports_with_one_run_of_each_still_read(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "7b-digits-closed-64conn-batching", predictions_per_s=82448, latency_ms={"p99": 1.6})
            write(d, "7a-digits-closed-64conn-unbatched", predictions_per_s=42090, latency_ms={"p99": 3.2})
            text = report(d)
            self.assertIn("| predictions/s (median of 1 pair; each ratio: 1.96) | 82,448 | 42,090 | 1.96 | >= 2.0 |",
                          text)
            self.assertIn("| p99 ms (median of 1 pair; each ratio: 0.50) | 1.600 | 3.200 | 0.50 | <= 1.0 |", text)

    def test_pairs_win_over_the_older_names_and_a_missing_round_leaves_the_later_ones(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "7b-digits-closed-64conn-batching", predictions_per_s=10, latency_ms={"p99": 9.0})
            write(d, "7a-digits-closed-64conn-unbatched", predictions_per_s=10, latency_ms={"p99": 1.0})
            # Round 2 has only one side; rounds 1 and 3 count.
            for r, (b, u) in ((1, (80, 40)), (3, (90, 40))):
                write(d, f"cmp-digits-batched-r{r}", predictions_per_s=b, latency_ms={"p99": 1.0})
                write(d, f"cmp-digits-unbatched-r{r}", predictions_per_s=u, latency_ms={"p99": 2.0})
            write(d, "cmp-digits-unbatched-r2", predictions_per_s=1, latency_ms={"p99": 1.0})
            text = report(d)
            self.assertIn("| predictions/s (median of 2 pairs; each ratio: 2.00, 2.25) | 85 | 40 | 2.12 | >= 2.0 |",
                          text)
            self.assertIn("| p99 ms (median of 2 pairs; each ratio: 0.50, 0.50) | 1.000 | 2.000 | 0.50 | <= 1.0 |",
                          text)

    def test_no_table_without_both_sides(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "cmp-digits-batched-r1", predictions_per_s=1, latency_ms={"p99": 1})
            self.assertNotIn("dynamic batching", report(d))


class Steal(unittest.TestCase):
    def test_the_runs_the_load_tester_flagged_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "cmp-v1-http-gateway-r1", achieved_rps=900, steal_pct=0.4, steal_high=False)
            write(d, "cmp-v1-http-bare-r1", achieved_rps=1000, steal_pct=7.5, steal_high=True)
            line = next(line for line in report(d).splitlines() if line.startswith("steal:"))
            self.assertIn("at most 7.5 % of the CPU time over 2 runs", line)
            self.assertIn("flagged high by the load tester in cmp-v1-http-bare-r1 (7.5 %)", line)
            self.assertNotIn("gateway", line)


if __name__ == "__main__":
    unittest.main()
