#!/usr/bin/env python3
"""Checks hookledger's signed tree heads and Merkle proofs without trusting
the server, and without any of hookledger's code: RFC 9162 §2.1 with hashlib,
Ed25519 with the `cryptography` package.

    verify_proofs.py head --keys KEYS HEAD
    verify_proofs.py inclusion --keys KEYS --head HEAD --proof PROOF [--event EVENT]
    verify_proofs.py consistency --keys KEYS --old HEAD --new HEAD --proof PROOF
    verify_proofs.py bundle [--complete] BUNDLE

KEYS is the answer of GET /v1/ledger/public-key, HEAD of /v1/ledger/tree-head,
PROOF of /v1/ledger/proofs/inclusion or /consistency, EVENT one event of a
delivery's /events (its hash is recomputed from its fields). A BUNDLE is
{"keys", "heads": [...], "inclusion": [...], "consistency": [...],
"events": [...]}: every head's signature, every inclusion proof against the
head of its treeSize, every consistency proof between the heads of its sizes,
and every event against the leaf of its sequence. With --complete, every
sequence of every head that has inclusion proofs must be proved.

Exit 0 when everything verifies; 1 naming the first thing that does not.
"""

import argparse
import hashlib
import json
import struct
import sys
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOMAIN = b"hookledger tree head v1"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Failed(Exception):
    pass


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(event_hash):
    return sha256(b"\x00" + event_hash)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def unhex(text, what, size=32):
    try:
        value = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise Failed(f"{what} is not hex: {text!r}")
    if len(value) != size:
        raise Failed(f"{what} is not {size} bytes")
    return value


# RFC 9162 §2.1.3.2
def verify_inclusion(leaf, index, size, path, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# RFC 9162 §2.1.4.2
def verify_consistency(first, second, first_root, second_root, proof):
    if first == 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:
        proof = [first_root] + list(proof)
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def prefixed(text):
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def micros(timestamp):
    if not isinstance(timestamp, str) or not timestamp.endswith("Z"):
        raise Failed(f"timestamp {timestamp!r} is not RFC 3339 in UTC")
    try:
        at = datetime.fromisoformat(timestamp[:-1] + "+00:00")
    except ValueError:
        raise Failed(f"timestamp {timestamp!r} is not RFC 3339")
    delta = at - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def head_bytes(head):
    """The bytes a head's signature covers, as the README defines them."""
    return (
        prefixed(DOMAIN.decode())
        + prefixed(head["organizationId"])
        + struct.pack(">Q", head["treeSize"])
        + struct.pack(">q", micros(head["timestamp"]))
        + unhex(head["rootHash"], "rootHash")
    )


def verify_head(head, keys):
    """The head's signature checks with the published key it names."""
    try:
        key = next(k for k in keys["keys"] if k["keyId"] == head["keyId"])
    except StopIteration:
        raise Failed(f"no published key {head['keyId']!r}")
    public = unhex(key["publicKey"], "publicKey")
    if hashlib.sha256(public).hexdigest()[:16] != key["keyId"]:
        raise Failed(f"key {key['keyId']} is not the id of its public key")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            unhex(head["signature"], "signature", 64), head_bytes(head)
        )
    except InvalidSignature:
        raise Failed(f"the signature of the head of size {head['treeSize']} does not verify")
    return unhex(head["rootHash"], "rootHash")


def check_inclusion(proof, head, root):
    size, sequence = proof["treeSize"], proof["sequence"]
    if size != head["treeSize"]:
        raise Failed(f"the proof is for size {size}, the head is of size {head['treeSize']}")
    path = [unhex(h, "auditPath") for h in proof["auditPath"]]
    leaf = unhex(proof["leafHash"], "leafHash")
    if not verify_inclusion(leaf, sequence - 1, size, path, root):
        raise Failed(f"sequence {sequence} is not proved included in the head of size {size}")
    return leaf


def check_consistency(proof, old, new, old_root, new_root):
    if (proof["from"], proof["to"]) != (old["treeSize"], new["treeSize"]):
        raise Failed("the consistency proof is for other sizes than the heads")
    path = [unhex(h, "proof") for h in proof["proof"]]
    if not verify_consistency(proof["from"], proof["to"], old_root, new_root, path):
        raise Failed(f"the head of size {proof['to']} is not proved to extend the one of size {proof['from']}")


class Raw:
    """A JSON number kept as written: canonical JSON keeps client numbers as sent."""

    def __init__(self, text):
        self.text = text


def canonical(value):
    """Canonical JSON: keys sorted by their UTF-8 bytes, no whitespace."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return "{" + ",".join(canonical(k) + ":" + canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, Raw):
        return value.text
    return json.dumps(value, ensure_ascii=False)


def event_hash(event):
    """SHA-256(prevHash || canonical bytes), recomputed from the event's fields."""
    fields = {
        "data": event["data"],
        "metadata": event["metadata"],
        "recordedAt": event["recordedAt"],
        "schemaVersion": event["schemaVersion"],
        "stream": event["stream"],
        "type": event["type"],
        "version": event["version"],
    }
    body = canonical(fields).encode("utf-8")
    computed = sha256(unhex(event["prevHash"], "prevHash") + body)
    if computed != unhex(event["hash"], "hash"):
        raise Failed(f"event {event.get('sequence')} does not hash to its hash")
    return computed


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_int=Raw, parse_float=Raw)


def plain(value):
    """Numbers back to ints, for everything but the event bodies."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Raw):
        return int(value.text) if value.text.lstrip("-").isdigit() else float(value.text)
    return value


def bundle(doc, complete):
    keys = plain(doc["keys"])
    heads = {}
    for head in map(plain, doc.get("heads", [])):
        heads[head["treeSize"]] = (head, verify_head(head, keys))
    leaves = {}
    proved = {}
    for proof in map(plain, doc.get("inclusion", [])):
        if proof["treeSize"] not in heads:
            raise Failed(f"no head of size {proof['treeSize']} for the proof of {proof['sequence']}")
        head, root = heads[proof["treeSize"]]
        leaves[proof["sequence"]] = check_inclusion(proof, head, root)
        proved.setdefault(proof["treeSize"], set()).add(proof["sequence"])
    for proof in map(plain, doc.get("consistency", [])):
        if proof["from"] not in heads or proof["to"] not in heads:
            raise Failed(f"no heads of sizes {proof['from']} and {proof['to']}")
        (old, old_root), (new, new_root) = heads[proof["from"]], heads[proof["to"]]
        check_consistency(proof, old, new, old_root, new_root)
    for event in doc.get("events", []):
        sequence = plain(event["sequence"])
        if sequence not in leaves:
            raise Failed(f"no inclusion proof for event {sequence}")
        if leaf_hash(event_hash(event)) != leaves[sequence]:
            raise Failed(f"event {sequence} is not the leaf its proof proves")
    for size, sequences in sorted(proved.items()):
        missing = size - len(sequences)
        if complete and missing:
            raise Failed(f"{missing} of the {size} events of the head of size {size} are not proved")
        print(f"ok: {len(sequences)} of {size} events proved included in the signed head of size {size}")
    for proof in doc.get("consistency", []):
        print(f"ok: the head of size {plain(proof['to'])} extends the head of size {plain(proof['from'])}")
    print(f"ok: {len(heads)} head signatures, {len(doc.get('events', []))} events hashed and matched to their leaves")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    head = commands.add_parser("head")
    head.add_argument("--keys", required=True)
    head.add_argument("head")
    inclusion = commands.add_parser("inclusion")
    inclusion.add_argument("--keys", required=True)
    inclusion.add_argument("--head", required=True)
    inclusion.add_argument("--proof", required=True)
    inclusion.add_argument("--event")
    consistency = commands.add_parser("consistency")
    consistency.add_argument("--keys", required=True)
    consistency.add_argument("--old", required=True)
    consistency.add_argument("--new", required=True)
    consistency.add_argument("--proof", required=True)
    whole = commands.add_parser("bundle")
    whole.add_argument("--complete", action="store_true")
    whole.add_argument("bundle")
    args = parser.parse_args()
    try:
        if args.command == "bundle":
            bundle(load(args.bundle), args.complete)
            return 0
        keys = plain(load(args.keys))
        if args.command == "head":
            h = plain(load(args.head))
            verify_head(h, keys)
            print(f"ok: the head of size {h['treeSize']} is signed by key {h['keyId']}")
        elif args.command == "inclusion":
            h, proof = plain(load(args.head)), plain(load(args.proof))
            leaf = check_inclusion(proof, h, verify_head(h, keys))
            if args.event:
                event = load(args.event)
                if plain(event["sequence"]) != proof["sequence"]:
                    raise Failed("the event's sequence is not the proof's")
                if leaf_hash(event_hash(event)) != leaf:
                    raise Failed(f"event {proof['sequence']} is not the leaf its proof proves")
            print(f"ok: sequence {proof['sequence']} is in the signed head of size {h['treeSize']}")
        else:
            old, new, proof = plain(load(args.old)), plain(load(args.new)), plain(load(args.proof))
            check_consistency(proof, old, new, verify_head(old, keys), verify_head(new, keys))
            print(f"ok: the head of size {new['treeSize']} extends the head of size {old['treeSize']}")
        return 0
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError, OSError) as e:
        print(f"FAILED: unreadable input: {e!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
