"""Drives the real segment-analytics-python SDK against a Junction server and prints, as one
JSON array on stdout, every message the SDK queued (the SDK returns each message exactly as it
puts it on the wire), so the Rust test can compare them with what Junction stored.

Usage: python3 send.py HOST WRITE_KEY ROUNDS [gzip]
"""
import datetime
import json
import sys

from segment.analytics.client import Client

host, write_key, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
gzip = len(sys.argv) > 4 and sys.argv[4] == "gzip"
failures = []
client = Client(
    write_key,
    host=host,
    gzip=gzip,
    max_retries=3,
    upload_size=9,
    on_error=lambda error, batch: failures.append(str(error)),
)
sent = []


def keep(result):
    ok, message = result
    assert ok, message
    sent.append(message)


for n in range(rounds):
    user = f"py-user-{n}"
    keep(client.identify(user, {"email": f"{user}@example.com", "plan": "pro", "seats": n}))
    keep(client.track(user, "Plan Upgraded", {"revenue": 9.99, "currency": "EUR"}))
    keep(client.page(user, "Docs", "Intro", {"url": "https://x.test/docs"}))
    keep(client.screen(anonymous_id=f"py-anon-{n}", name="Home", properties={"tab": 1}))
    keep(client.group(user, f"g-{n}", {"name": "Acme", "employees": 42}))
    keep(client.alias(f"py-anon-{n}", user))
    keep(
        client.track(
            anonymous_id=f"py-anon-{n}",
            event="Viewed",
            timestamp=datetime.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=datetime.timezone.utc),
        )
    )

client.flush()
client.join()
if failures:
    sys.stderr.write(f"analytics-python reported failures: {failures}\n")
    sys.exit(1)
print(json.dumps(sent, default=str))
