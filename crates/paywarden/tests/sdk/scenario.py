"""The official stripe-python SDK, unchanged, against a running `paywarden serve`.

Usage: PAYWARDEN_URL=http://127.0.0.1:PORT PAYWARDEN_KEY=sk_test_... python3 scenario.py
Exits non-zero on the first broken expectation. The merchant must be fresh (no objects yet):
the pagination check counts every intent it can see.
"""
import os
import sys
import uuid

import stripe

stripe.api_base = os.environ["PAYWARDEN_URL"]
stripe.api_key = os.environ["PAYWARDEN_KEY"]
stripe.max_network_retries = 0  # a retry would hide a server error from this test

created = []  # intent ids in creation order


def step(name):
    print(f"- {name}", flush=True)


def expect_error(cls, fn, **want):
    try:
        fn()
    except cls as e:
        for k, v in want.items():
            got = getattr(e, k, None)
            if k == "decline_code":
                got = e.error.decline_code
            assert got == v, f"{cls.__name__}.{k}: want {v!r}, got {got!r} ({e})"
        return e
    except stripe.StripeError as e:
        raise AssertionError(f"want {cls.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"want {cls.__name__}, got success")


def intent(**kw):
    pi = stripe.PaymentIntent.create(**kw)
    created.append(pi.id)
    return pi


step("a wrong key is refused")
expect_error(
    stripe.AuthenticationError,
    lambda: stripe.PaymentIntent.list(api_key="sk_test_wrong"),
    http_status=401,
)

step("create+confirm with pm_card_visa succeeds")
pi = intent(amount=2000, currency="usd", payment_method="pm_card_visa", confirm=True)
assert pi.status == "succeeded", pi.status
assert pi.amount_received == 2000 and pi.object == "payment_intent" and pi.livemode is False
assert pi.id.startswith("pi_") and pi.latest_charge.startswith("ch_") and pi.payment_method.startswith("pm_")
charge = stripe.Charge.retrieve(pi.latest_charge)
assert charge.captured and charge.amount_captured == 2000 and charge.status == "succeeded"

step("partial refunds, then an over-refund is refused, then the rest")
r1 = stripe.Refund.create(payment_intent=pi.id, amount=500)
r2 = stripe.Refund.create(payment_intent=pi.id, amount=700, reason="requested_by_customer")
assert r1.id.startswith("re_") and r1.amount == 500 and r2.status == "succeeded"
e = expect_error(
    stripe.InvalidRequestError,
    lambda: stripe.Refund.create(payment_intent=pi.id, amount=801),
    http_status=400,
    code="amount_too_large",
)
rest = stripe.Refund.create(payment_intent=pi.id)
assert rest.amount == 800, rest.amount
refunds = stripe.Refund.list(payment_intent=pi.id)
assert sorted(r.amount for r in refunds.data) == [500, 700, 800]
expect_error(stripe.InvalidRequestError, lambda: stripe.Refund.create(payment_intent=pi.id, amount=1), code="charge_already_refunded")
assert stripe.Refund.retrieve(r1.id).amount == 500

step("manual capture with a partial capture")
pi = intent(amount=1000, currency="usd", payment_method="pm_card_mastercard", capture_method="manual", confirm=True)
assert pi.status == "requires_capture" and pi.amount_capturable == 1000, (pi.status, pi.amount_capturable)
expect_error(
    stripe.InvalidRequestError,
    lambda: stripe.PaymentIntent.capture(pi.id, amount_to_capture=1001),
    code="amount_too_large",
)
pi = stripe.PaymentIntent.capture(pi.id, amount_to_capture=600)
assert pi.status == "succeeded" and pi.amount_received == 600 and pi.amount_capturable == 0
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.capture(pi.id), code="payment_intent_unexpected_state")
expect_error(stripe.InvalidRequestError, lambda: stripe.Refund.create(payment_intent=pi.id, amount=601), code="amount_too_large")

step("a decline raises CardError and leaves the intent in requires_payment_method")
e = expect_error(
    stripe.CardError,
    lambda: intent(amount=1500, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True),
    http_status=402,
    code="card_declined",
    decline_code="generic_decline",
)
declined_id = e.error.payment_intent["id"]
created.append(declined_id)
pi = stripe.PaymentIntent.retrieve(declined_id)
assert pi.status == "requires_payment_method", pi.status
assert pi.last_payment_error.decline_code == "generic_decline"
step("the same intent succeeds when confirmed again with a good card")
pi = stripe.PaymentIntent.confirm(declined_id, payment_method="pm_card_visa")
assert pi.status == "succeeded" and pi.last_payment_error is None
expect_error(
    stripe.CardError,
    lambda: intent(amount=1500, currency="usd", payment_method="pm_card_chargeDeclinedInsufficientFunds", confirm=True),
    decline_code="insufficient_funds",
)
created.append(None)  # the declined intent above exists; its id is not needed

step("a card payment method, created from a card number, then confirmed")
pm = stripe.PaymentMethod.create(type="card", card={"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"})
assert pm.card.last4 == "4242" and pm.card.brand == "visa" and "number" not in pm.card
pi = intent(amount=1099, currency="eur", payment_method=pm.id)
assert pi.status == "requires_confirmation"
pi = stripe.PaymentIntent.confirm(pi.id)
assert pi.status == "succeeded"
expect_error(
    stripe.CardError,
    lambda: stripe.PaymentMethod.create(type="card", card={"number": "4242424242424241", "exp_month": 12, "exp_year": 2034}),
    code="incorrect_number",
)

step("idempotent replay and a conflicting reuse")
key = str(uuid.uuid4())
a = stripe.PaymentIntent.create(amount=4200, currency="usd", payment_method="pm_card_visa", confirm=True, idempotency_key=key)
created.append(a.id)
b = stripe.PaymentIntent.create(amount=4200, currency="usd", payment_method="pm_card_visa", confirm=True, idempotency_key=key)
assert a.id == b.id, (a.id, b.id)
assert b.last_response.headers.get("idempotent-replayed") == "true"
assert a.last_response.body == b.last_response.body
expect_error(
    stripe.IdempotencyError,
    lambda: stripe.PaymentIntent.create(amount=4300, currency="usd", idempotency_key=key),
    http_status=400,
)

step("zero-decimal JPY and three-decimal KWD")
jpy = intent(amount=500, currency="jpy", payment_method="pm_card_visa", confirm=True)
assert jpy.status == "succeeded" and jpy.amount_received == 500 and jpy.currency == "jpy"
kwd = intent(amount=1234, currency="KWD", payment_method="pm_card_visa", confirm=True)
assert kwd.status == "succeeded" and kwd.currency == "kwd" and kwd.amount_received == 1234

step("update metadata, cancel with a reason")
pi = intent(amount=700, currency="usd", metadata={"order": "A-1"})
pi = stripe.PaymentIntent.modify(pi.id, metadata={"order": "A-2", "gift": "yes"}, description="two mugs")
assert pi.metadata["order"] == "A-2" and pi.metadata["gift"] == "yes" and pi.description == "two mugs"
pi = stripe.PaymentIntent.cancel(pi.id, cancellation_reason="requested_by_customer")
assert pi.status == "canceled" and pi.cancellation_reason == "requested_by_customer"
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.confirm(pi.id, payment_method="pm_card_visa"), code="payment_intent_unexpected_state")

step("bad input is a 400 naming the parameter")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.create(amount=0, currency="usd"), param="amount")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.create(amount=100, currency="xyz"), param="currency")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.create(amount=100), param="currency")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.create(amount=100, currency="usd", colour="red"), param="colour")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.retrieve("pi_doesnotexist"), http_status=404)

step("auto_paging_iter over more than 100 intents: each once, newest first")
for i in range(101):
    intent(amount=100 + i, currency="usd")
seen = [p.id for p in stripe.PaymentIntent.list(limit=100).auto_paging_iter()]
assert len(seen) == len(set(seen)), "an intent was listed twice"
known = [i for i in created if i is not None]
assert len(seen) == len(created), f"listed {len(seen)}, created {len(created)}"
assert set(known) <= set(seen)
order = [i for i in seen if i in set(known)]
assert order == list(reversed(known)), "not newest first"

step("a browser: the publishable key and the intent's client secret")
pk = os.environ["PAYWARDEN_PUBLISHABLE_KEY"]
pi = stripe.PaymentIntent.create(amount=1234, currency="usd")  # the server, with its secret key
assert pi.client_secret.startswith(pi.id + "_secret_"), pi.client_secret
pm = stripe.PaymentMethod.create(
    type="card", card={"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}, api_key=pk
)
seen = stripe.PaymentIntent.retrieve(pi.id, client_secret=pi.client_secret, api_key=pk)
assert seen.status == "requires_payment_method" and seen.client_secret == pi.client_secret, seen
done = stripe.PaymentIntent.confirm(pi.id, payment_method=pm.id, client_secret=pi.client_secret, api_key=pk)
assert done.status == "succeeded", done.status
wrong = pi.id + "_secret_" + "x" * 24
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.retrieve(pi.id, client_secret=wrong, api_key=pk), param="client_secret")
expect_error(stripe.AuthenticationError, lambda: stripe.PaymentIntent.list(api_key=pk))
expect_error(stripe.AuthenticationError, lambda: stripe.Refund.create(payment_intent=pi.id, api_key=pk))
assert stripe.PaymentIntent.retrieve(pi.id).amount_received == 1234

print(f"stripe-python {stripe.VERSION}: all checks passed ({len(created)} intents)")
