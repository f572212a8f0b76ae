"""Messages exchanged by the SecAgg+ stages, as plain dataclasses.

Every field is a ``str``, ``int``, ``float``, ``bytes``, a list of one of those, or a numpy
array, so a message maps one-to-one onto Flower records (lists and scalars into a
``ConfigRecord``, arrays into an ``ArrayRecord``). ``to_dict()`` returns exactly such a
flat mapping and ``from_dict()`` rebuilds (and type-checks) the message from it.

Stage by stage (``S`` = server, ``C_u`` = client ``u``; names in :class:`Stage`):

=====================  ===================  ===========================================
stage                  S -> C_u             C_u -> S
=====================  ===================  ===========================================
setup / share_keys     :class:`SetupMessage`  :class:`PublicKeys`
share_secrets          :class:`NeighbourKeys` :class:`EncryptedShares`
collect_masked_input   :class:`ForwardedShares` :class:`MaskedInput`
unmask                 :class:`UnmaskRequest` :class:`UnmaskResponse`
=====================  ===================  ===========================================

Every message carries ``run_id`` and ``round_id`` so that a party can reject a message
from another run or round before touching it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Self

import numpy as np

from privacy.secagg.errors import SecAggProtocolError

__all__ = [
    "Stage",
    "SetupMessage",
    "PublicKeys",
    "NeighbourKeys",
    "EncryptedShare",
    "EncryptedShares",
    "ForwardedShares",
    "MaskedInput",
    "UnmaskRequest",
    "UnmaskResponse",
]


class Stage:
    """Stage names, used in errors, in ``drop_at`` of the driver and by the Flower glue."""

    SETUP = "setup"
    SHARE_KEYS = "share_keys"
    SHARE_SECRETS = "share_secrets"
    COLLECT_MASKED_INPUT = "collect_masked_input"
    UNMASK = "unmask"

    ALL = (SETUP, SHARE_KEYS, SHARE_SECRETS, COLLECT_MASKED_INPUT, UNMASK)


# Element kinds whose values pass ``_convert`` unchanged when of exactly this type (a
# ``bool`` is not an ``int`` here, as in ``_convert``).
_EXACT_TYPES = {"int": int, "float": float, "str": str, "bytes": bytes}


def _convert(kind: str, name: str, value: Any) -> Any:
    def bad() -> SecAggProtocolError:
        return SecAggProtocolError(f"field '{name}' must be {kind}, got {type(value).__name__}")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise bad()
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, Real):
            raise bad()
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == "bytes":
        if not isinstance(value, (bytes, bytearray)):
            raise bad()
        return bytes(value)
    if kind.startswith("list["):
        if not isinstance(value, (list, tuple)):
            raise bad()
        inner = kind[5:-1]
        exact = _EXACT_TYPES.get(inner)
        if exact is not None and all(type(v) is exact for v in value):
            return list(value)  # already what the element check would return
        return [_convert(inner, name, v) for v in value]
    if kind == "np.ndarray":
        if not isinstance(value, np.ndarray):
            raise bad()
        return value
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover


class _Message:
    """``to_dict``/``from_dict`` for dataclasses whose fields are plain types."""

    def to_dict(self) -> dict[str, Any]:
        """Flat mapping of field name to ``str``/``int``/``float``/``bytes``/list/array."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, (list, tuple)) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Rebuild the message from :meth:`to_dict` output, checking names and types."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        expected = {f.name for f in fields}
        if set(data) != expected:
            raise SecAggProtocolError(
                f"{cls.__name__}: expected keys {sorted(expected)}, got {sorted(data)}"
            )
        return cls(**{f.name: _convert(str(f.type), f.name, data[f.name]) for f in fields})


@dataclass(frozen=True)
class SetupMessage(_Message):
    """Stage ``setup`` (S -> all): the public parameters of the round.

    ``client_ids`` is the cohort (sorted); every party derives the same neighbour graph from
    ``(client_ids, degree, graph_seed, run_id, round_id)``.
    """

    run_id: str
    round_id: int
    client_ids: list[int]
    threshold: int
    degree: int
    graph_seed: bytes
    vector_length: int
    clip_range: float
    quant_bits: int
    modulus_bits: int
    rounding: str


@dataclass(frozen=True)
class PublicKeys(_Message):
    """Stage ``share_keys`` (C_u -> S): ``c_u^PK`` (share encryption) and ``s_u^PK``
    (mask agreement), raw 32-byte X25519 public keys."""

    run_id: str
    round_id: int
    client_id: int
    share_public_key: bytes
    mask_public_key: bytes


@dataclass(frozen=True)
class NeighbourKeys(_Message):
    """Stage ``share_secrets`` (S -> C_u): public keys of the neighbours of ``recipient``
    (and of ``recipient`` itself) that completed ``share_keys``; parallel lists."""

    run_id: str
    round_id: int
    recipient: int
    client_ids: list[int]
    share_public_keys: list[bytes]
    mask_public_keys: list[bytes]

    def __post_init__(self) -> None:
        if not len(self.client_ids) == len(self.share_public_keys) == len(self.mask_public_keys):
            raise SecAggProtocolError(
                f"NeighbourKeys for client {self.recipient}: key lists differ in length"
            )


@dataclass(frozen=True)
class EncryptedShare:
    """One AES-256-GCM ciphertext of ``sender``'s shares for ``recipient``."""

    sender: int
    recipient: int
    nonce: bytes
    ciphertext: bytes


class _ShareList:
    """``to_dict``/``from_dict`` for a message carrying the shares one client has in common.

    Every share has the same ``_OWNER`` end (a field of the message, e.g. ``sender``); on
    the wire the shares become the parallel lists ``<_PEER>s`` (the other end of each
    share), ``nonces`` and ``ciphertexts``, next to ``run_id``, ``round_id`` and the owner.
    """

    _OWNER: ClassVar[str]
    _PEER: ClassVar[str]

    run_id: str
    round_id: int
    shares: list[EncryptedShare]

    def to_dict(self) -> dict[str, Any]:
        """Flat mapping; the shares become parallel lists ``<peer>s``, ``nonces``,
        ``ciphertexts``."""
        return {
            "run_id": self.run_id,
            "round_id": self.round_id,
            self._OWNER: getattr(self, self._OWNER),
            f"{self._PEER}s": [getattr(s, self._PEER) for s in self.shares],
            "nonces": [s.nonce for s in self.shares],
            "ciphertexts": [s.ciphertext for s in self.shares],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`, checking names, types and list lengths."""
        peers_key = f"{cls._PEER}s"
        keys = {"run_id", "round_id", cls._OWNER, peers_key, "nonces", "ciphertexts"}
        if set(data) != keys:
            raise SecAggProtocolError(
                f"{cls.__name__}: expected keys {sorted(keys)}, got {sorted(data, key=str)}"
            )
        owner = _convert("int", cls._OWNER, data[cls._OWNER])
        peers = _convert("list[int]", peers_key, data[peers_key])
        nonces = _convert("list[bytes]", "nonces", data["nonces"])
        ciphertexts = _convert("list[bytes]", "ciphertexts", data["ciphertexts"])
        if not len(peers) == len(nonces) == len(ciphertexts):
            raise SecAggProtocolError(f"{cls.__name__}: share lists have different lengths")
        shares = [
            EncryptedShare(**{cls._OWNER: owner, cls._PEER: p, "nonce": n, "ciphertext": c})
            for p, n, c in zip(peers, nonces, ciphertexts, strict=True)
        ]
        return cls(  # type: ignore[call-arg]
            _convert("str", "run_id", data["run_id"]),
            _convert("int", "round_id", data["round_id"]),
            owner,
            shares,
        )


@dataclass(frozen=True)
class EncryptedShares(_ShareList):
    """Stage ``share_secrets`` (C_u -> S): one ciphertext per neighbour of ``sender``.

    On the wire (:meth:`to_dict`) the shares are the parallel lists ``recipients``,
    ``nonces``, ``ciphertexts``."""

    _OWNER: ClassVar[str] = "sender"
    _PEER: ClassVar[str] = "recipient"

    run_id: str
    round_id: int
    sender: int
    shares: list[EncryptedShare] = field(default_factory=list)


@dataclass(frozen=True)
class ForwardedShares(_ShareList):
    """Stage ``collect_masked_input`` (S -> C_u): the ciphertexts addressed to
    ``recipient`` by neighbours that completed ``share_secrets``.

    On the wire (:meth:`to_dict`) the shares are the parallel lists ``senders``,
    ``nonces``, ``ciphertexts``."""

    _OWNER: ClassVar[str] = "recipient"
    _PEER: ClassVar[str] = "sender"

    run_id: str
    round_id: int
    recipient: int
    shares: list[EncryptedShare] = field(default_factory=list)


@dataclass(frozen=True)
class MaskedInput(_Message):
    """Stage ``collect_masked_input`` (C_u -> S): ``y_u``, elements of ``Z_{2^b}`` in the
    ring's word (``uint32`` for ``b <= 32``, else ``uint64``)."""

    run_id: str
    round_id: int
    client_id: int
    masked_vector: np.ndarray


@dataclass(frozen=True)
class UnmaskRequest(_Message):
    """Stage ``unmask`` (S -> C_u): which neighbours of ``recipient`` (itself included)
    sent a masked input (``survivors``) and which shared secrets but did not
    (``dropped``). The two lists are disjoint."""

    run_id: str
    round_id: int
    recipient: int
    survivors: list[int]
    dropped: list[int]


@dataclass(frozen=True)
class UnmaskResponse(_Message):
    """Stage ``unmask`` (C_u -> S): shares of self-mask seeds of survivors and of mask
    private keys of dropped clients (66-byte field elements); never both for one owner."""

    run_id: str
    round_id: int
    client_id: int
    seed_share_owners: list[int]
    seed_shares: list[bytes]
    key_share_owners: list[int]
    key_shares: list[bytes]

    _PAIRS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("seed_share_owners", "seed_shares"),
        ("key_share_owners", "key_shares"),
    )

    def __post_init__(self) -> None:
        for owners, shares in self._PAIRS:
            if len(getattr(self, owners)) != len(getattr(self, shares)):
                raise SecAggProtocolError(
                    f"UnmaskResponse from client {self.client_id}: '{owners}' and "
                    f"'{shares}' differ in length"
                )
