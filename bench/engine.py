"""Benchmark of the tariff engine (tariffs/engine.py): pure Python, no database.

    .venv/bin/python bench/engine.py

Prices, under the spec's complex tariff (tariff_4_complex.json: start fee, TIME by current and weekday, parking by
time of day), a 10-hour session with a meter reading every minute whose current swings across the 32 A bound (31
periods), an hour of parking; then a typical 20 kWh estimate (what the start confirmation shows). Prints the median
and worst of BENCH_ROUNDS (50) runs of each. Last line: name=value figures (milliseconds).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tariffs.engine import ChargingActivity, MeterSample, estimate_session, price_session  # noqa: E402

TARIFF = {
    "country_code": "DE", "party_id": "ALL", "id": "14", "currency": "EUR", "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "FLAT", "price": 2.50, "vat": 15.0, "step_size": 1}]},
        {"price_components": [{"type": "TIME", "price": 1.00, "vat": 20.0, "step_size": 900}],
         "restrictions": {"max_current": 32.00}},
        {"price_components": [{"type": "TIME", "price": 2.00, "vat": 20.0, "step_size": 600}],
         "restrictions": {"min_current": 32.00,
                          "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]}},
        {"price_components": [{"type": "TIME", "price": 1.25, "vat": 20.0, "step_size": 600}],
         "restrictions": {"min_current": 32.00, "day_of_week": ["SATURDAY", "SUNDAY"]}},
        {"price_components": [{"type": "PARKING_TIME", "price": 5.00, "vat": 10.0, "step_size": 300}],
         "restrictions": {"start_time": "09:00", "end_time": "18:00",
                          "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]}},
        {"price_components": [{"type": "PARKING_TIME", "price": 6.00, "vat": 10.0, "step_size": 300}],
         "restrictions": {"start_time": "10:00", "end_time": "17:00", "day_of_week": ["SATURDAY"]}},
    ],
    "last_updated": "2015-06-29T20:39:09Z",
}


def measure(rounds: int, run) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "50"))
    t0 = datetime(2024, 3, 4, 8, tzinfo=UTC)
    samples = [MeterSample(t0 + timedelta(minutes=i), Decimal(i) / 10, Decimal(6), Decimal(16 + i % 40))
               for i in range(600)]
    session = ChargingActivity(start=t0, end=t0 + timedelta(minutes=660), samples=samples,
                               charging_end=t0 + timedelta(minutes=600))
    cost = price_session(TARIFF, session, "Europe/Berlin")
    print(f"10 h session, 600 readings: {len(cost.periods)} periods, total {cost.total}")
    session_median, session_worst = measure(rounds, lambda: price_session(TARIFF, session, "Europe/Berlin"))
    print(f"  median {session_median:.2f} ms, worst {session_worst:.2f} ms over {rounds} runs")
    estimate_median, estimate_worst = measure(rounds, lambda: estimate_session(
        TARIFF, kwh=Decimal(20), power_kw=Decimal(11), start=t0, time_zone="Europe/Berlin"))
    print(f"20 kWh estimate: median {estimate_median:.2f} ms, worst {estimate_worst:.2f} ms")
    load = os.getloadavg()[0]
    print(f"session_600_readings_ms={session_median:.2f} session_worst_ms={session_worst:.2f} "
          f"estimate_ms={estimate_median:.3f} load1={load:.2f}")


if __name__ == "__main__":
    main()
