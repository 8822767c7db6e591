"""RFC 7919 finite-field Diffie-Hellman groups as PEM.

Each is what `openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdheN` prints.

nginx wants a dhparam file; a published group is as strong as a freshly generated one of the
same size and costs nothing to make (generating 4096 bits takes minutes).
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass

FFDHE_PEM: dict[int, str] = {
    2048: """\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
""",
    3072: """\
-----BEGIN DH PARAMETERS-----
MIIBiAKCAYEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEfz9zeNVs7ZRkDW7w09N75nAI4YbRvydbmyQd62R0mkff3
7lmMsPrBhtkcrv4TCYUTknC0EwyTvEN5RPT9RFLi103TZPLiHnH1S/9croKrnJ32
nuhtK8UiNjoNq8Uhl5sN6todv5pC1cRITgq80Gv6U93vPBsg7j/VnXwl5B0rZsYu
N///////////AgEC
-----END DH PARAMETERS-----
""",
    4096: """\
-----BEGIN DH PARAMETERS-----
MIICCAKCAgEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEfz9zeNVs7ZRkDW7w09N75nAI4YbRvydbmyQd62R0mkff3
7lmMsPrBhtkcrv4TCYUTknC0EwyTvEN5RPT9RFLi103TZPLiHnH1S/9croKrnJ32
nuhtK8UiNjoNq8Uhl5sN6todv5pC1cRITgq80Gv6U93vPBsg7j/VnXwl5B0rZp4e
8W5vUsMWTfT7eTDp5OWIV7asfV9C1p9tGHdjzx1VA0AEh/VbpX4xzHpxNciG77Qx
iu1qHgEtnmgyqQdgCpGBMMRtx3j5ca0AOAkpmaMzy4t6Gh25PXFAADwqTs6p+Y0K
zAqCkc3OyX3Pjsm1Wn+IpGtNtahR9EGC4caKAH5eZV9q//////////8CAQI=
-----END DH PARAMETERS-----
""",
}


@dataclass(frozen=True)
class DHParameters:
    """PKCS #3 DH parameters: the prime modulus and the generator."""

    p: int
    g: int


def load_dh_parameters(pem: bytes) -> DHParameters:
    """Parse PEM "DH PARAMETERS" (PKCS #3); ValueError when they are not.

    Read here rather than with cryptography: it deprecates finite-field DH and, from
    release 50, warns on every use of its DH classes. hostkit only judges the parameters
    nginx will use, so that warning is not the admin's business (and filtering warnings is
    not thread-safe while the doctor's probes run concurrently).
    """
    text = pem.decode("ascii", "replace")
    begin, end = "-----BEGIN DH PARAMETERS-----", "-----END DH PARAMETERS-----"
    if begin not in text or end not in text:
        raise ValueError("no BEGIN DH PARAMETERS block")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from exc
    seq, rest = _der(der, 0x30)
    if rest:
        raise ValueError("trailing data after the DH parameters")
    p, seq = _der(seq, 0x02)
    g, _ = _der(seq, 0x02)  # an optional privateValueLength may follow
    return DHParameters(int.from_bytes(p, "big"), int.from_bytes(g, "big"))


def _der(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """The content of the DER element of type `tag` at the start of data, and what follows."""
    if len(data) < 2 or data[0] != tag:
        raise ValueError("not DH parameters")
    length, at = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or len(data) < 2 + count:
            raise ValueError("bad DER length")
        length, at = int.from_bytes(data[2:2 + count], "big"), 2 + count
    if len(data) < at + length:
        raise ValueError("truncated DH parameters")
    return data[at:at + length], data[at + length:]


@functools.cache
def ffdhe_prime(bits: int) -> int:
    """The modulus of the RFC 7919 group of that size (parsed on first use, not at import)."""
    return load_dh_parameters(FFDHE_PEM[bits].encode()).p
