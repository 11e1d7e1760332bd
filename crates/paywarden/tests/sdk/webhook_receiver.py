"""A webhook receiver that checks paywarden's signatures with the official stripe-python SDK.

    python3 webhook_receiver.py SECRET OUT.jsonl [PORT] [--wrong-secret WRONG]

Listens on 127.0.0.1:PORT (0: any free port), prints "listening PORT" once bound, and for
every POST verifies the body with stripe.Webhook.construct_event(payload, Stripe-Signature,
SECRET). Each delivery appends one JSON line to OUT.jsonl: the event id and type, whether
the signature verified, and, with --wrong-secret, whether verifying with the wrong secret
failed as it must. Answers 200 when verified, 400 otherwise. Runs until killed.
"""

import http.server
import json
import sys

import stripe


def main():
    args = sys.argv[1:]
    wrong = None
    if "--wrong-secret" in args:
        i = args.index("--wrong-secret")
        wrong = args[i + 1]
        del args[i : i + 2]
    secret, out = args[0], args[1]
    port = int(args[2]) if len(args) > 2 else 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            payload = self.rfile.read(n)
            sig = self.headers.get("Stripe-Signature", "")
            record = {"signature": sig}
            try:
                event = stripe.Webhook.construct_event(payload, sig, secret)
                record.update(verified=True, id=event["id"], type=event["type"], object=event["data"]["object"]["object"])
            except (stripe.error.SignatureVerificationError, ValueError) as e:
                record.update(verified=False, error=str(e))
            if wrong is not None:
                try:
                    stripe.Webhook.construct_event(payload, sig, wrong)
                    record["wrong_secret_rejected"] = False
                except stripe.error.SignatureVerificationError:
                    record["wrong_secret_rejected"] = True
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.send_response(200 if record["verified"] else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
