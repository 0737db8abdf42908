"""A Zipkin application as py_zipkin users write one.

Usage: python py_zipkin_errors.py <zipkin receiver url> [traces] [every]

Emits `traces` traces (default 200) of three spans each: a `checkout` root
span with two children, `load-cart` and `charge`. In every `every`-th trace
(default 4, so 50 of 200) `charge` raises; py_zipkin then tags that span
`error=<exception type>: <message>`, and the application handles the
exception in the root span, so only the one span says error. Spans are
POSTed as Zipkin v2 JSON by a transport handler, one request per trace.

Prints one line per trace, `error <trace id>` or `ok <trace id>`.
"""

import sys
import urllib.request

from py_zipkin import Encoding
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_span


class HttpTransport(BaseTransportHandler):
    def __init__(self, url):
        self.url = url

    def get_max_payload_bytes(self):
        return None

    def send(self, payload):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=payload,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        # A non-2xx answer raises, failing the run.
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()


class PaymentDeclined(Exception):
    pass


def main():
    url = sys.argv[1]
    traces = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    transport = HttpTransport(url)
    for n in range(traces):
        fail = n % every == 0
        with zipkin_span(
            service_name="py-shop",
            span_name="checkout",
            transport_handler=transport,
            sample_rate=100.0,
            encoding=Encoding.V2_JSON,
        ) as root:
            trace_id = root.zipkin_attrs.trace_id
            with zipkin_span(service_name="py-shop", span_name="load-cart"):
                pass
            try:
                with zipkin_span(service_name="py-shop", span_name="charge"):
                    if fail:
                        raise PaymentDeclined(f"card declined for order {n}")
            except PaymentDeclined:
                pass
        print(("error " if fail else "ok ") + trace_id, flush=True)


if __name__ == "__main__":
    main()
