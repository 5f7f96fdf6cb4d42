import base64
import json
import time

import pytest
from standardwebhooks import Webhook

from workers.alerting.delivery import MAX_WAIT_S, sign, verify
from workers.retry import backoff_s

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-of-32-bytes-length").decode()


def test_signature_verifies_with_the_standardwebhooks_library() -> None:
    body = json.dumps({"type": "alert.opened", "key": "Macro"}).encode()
    timestamp = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(SECRET, "msg_1", timestamp, body)}
    assert Webhook(SECRET).verify(body, headers) == {"type": "alert.opened", "key": "Macro"}


def test_published_test_vector() -> None:
    # From the Standard Webhooks specification's reference implementations.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_any_current_secret_and_rejects_tampering() -> None:
    old = "whsec_" + base64.b64encode(b"old-secret").decode()
    body = b'{"a":1}'
    now = int(time.time())
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": sign(old, "msg_2", now, body)}
    assert verify([SECRET, old], headers, body)
    assert not verify([SECRET], headers, body)
    assert not verify([old], headers, b'{"a":2}')
    stale = dict(headers, **{"webhook-timestamp": str(now - 3600)})
    assert not verify([old], stale, body)


@pytest.mark.parametrize("attempts", [1, 2, 5, 20])
def test_backoff_grows_and_is_capped(attempts: int) -> None:
    import random

    wait = backoff_s(attempts, 1.0, MAX_WAIT_S, random.Random(0))
    assert 0.5 * min(3600, 2 ** (attempts - 1)) <= wait <= min(3600, 2 ** (attempts - 1))
