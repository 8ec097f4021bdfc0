#!/usr/bin/env python3
"""An independent OTLP profiles receiver for the integration tests.

It accepts ProfilesService/Export over gRPC and POST /v1development/profiles
over HTTP, decodes every request with the official classes (PyPI
opentelemetry-proto >= 1.43: the v1.10 wire), checks it against the
profiles spec's structural rules, and appends one JSON line per request to
--out: the violations found, and the content resolved through the
dictionary (resources, samples with their attributes and frames).

With --count-only it skips the checks and the content and logs, per
request, only its size and the samples' timestamps (`cargo xtask bench`
counts another profiler's samples this way, at a fraction of the CPU).

Faults are scripted for retry tests: the first N gRPC calls can fail with a
status (optionally carrying google.rpc.RetryInfo), the first N HTTP requests
can answer a status with Retry-After, and responses can be delayed. Each
refused attempt is logged as a {"fault": ...} line.
"""

import argparse
import gzip
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as service_pb2,
)
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2_grpc as service_grpc,
)
from opentelemetry.proto.profiles.v1development import profiles_pb2

LOCK = threading.Lock()


class Faults:
    """Counters of scripted failures, shared by both servers."""

    def __init__(self, args):
        self.grpc_left, self.grpc_code, self.grpc_retry_ms = parse_fault(args.grpc_fail)
        self.http_left, self.http_status, self.http_retry_after = parse_fault(args.http_fail)
        self.delay_left, self.delay_ms, _ = parse_fault(args.delay)
        self.partial_left, self.partial_rejected, _ = parse_fault(args.partial)

    def take(self, name):
        with LOCK:
            left = getattr(self, name + "_left")
            if left > 0:
                setattr(self, name + "_left", left - 1)
                return True
            return False


def parse_fault(spec):
    """N:VALUE[:EXTRA] -> (N, VALUE, EXTRA)."""
    if not spec:
        return 0, None, None
    parts = spec.split(":")
    extra = parts[2] if len(parts) > 2 else None
    return int(parts[0]), parts[1], extra


def write(out, record):
    with LOCK:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value_strindex":
        return ("strindex", v.string_value_strindex)
    return getattr(v, kind)


def validate(req):
    """The spec's structural rules; returns a list of violations."""
    bad = []
    d = req.dictionary
    tables = {
        "mapping_table": (d.mapping_table, profiles_pb2.Mapping()),
        "location_table": (d.location_table, profiles_pb2.Location()),
        "function_table": (d.function_table, profiles_pb2.Function()),
        "link_table": (d.link_table, profiles_pb2.Link()),
        "attribute_table": (d.attribute_table, profiles_pb2.KeyValueAndUnit()),
        "stack_table": (d.stack_table, profiles_pb2.Stack()),
    }
    for name, (table, zero) in tables.items():
        if len(table) == 0:
            bad.append(f"{name} is empty (index 0 must be the zero value)")
            continue
        if table[0] != zero:
            bad.append(f"{name}[0] is not the zero value")
        seen = {}
        for i, item in enumerate(table):
            key = item.SerializeToString(deterministic=True)
            if key in seen:
                bad.append(f"{name}[{i}] duplicates {name}[{seen[key]}]")
            seen[key] = i
    if len(d.string_table) == 0 or d.string_table[0] != "":
        bad.append("string_table[0] is not the empty string")
    if len(set(d.string_table)) != len(d.string_table):
        bad.append("string_table has duplicates")

    n = {k: len(v[0]) for k, v in tables.items()}
    n_str = len(d.string_table)
    used = {k: set([0]) for k in tables}
    used_str = set([0])

    def idx(kind, i, where):
        limit = n_str if kind == "string" else n[kind]
        if not 0 <= i < limit:
            bad.append(f"{where}: index {i} out of range for {kind} ({limit})")
            return False
        (used_str if kind == "string" else used[kind]).add(i)
        return True

    def attrs(indices, where):
        keys = set()
        for a in indices:
            if idx("attribute_table", a, where):
                key = d.attribute_table[a].key_strindex
                if key in keys:
                    bad.append(f"{where}: attribute key {key} repeated")
                keys.add(key)

    for i, m in enumerate(d.mapping_table):
        idx("string", m.filename_strindex, f"mapping[{i}].filename")
        attrs(m.attribute_indices, f"mapping[{i}]")
    for i, f in enumerate(d.function_table):
        for field in ("name_strindex", "system_name_strindex", "filename_strindex"):
            idx("string", getattr(f, field), f"function[{i}].{field}")
    for i, loc in enumerate(d.location_table):
        idx("mapping_table", loc.mapping_index, f"location[{i}].mapping")
        for line in loc.lines:
            idx("function_table", line.function_index, f"location[{i}].line")
        attrs(loc.attribute_indices, f"location[{i}]")
    for i, st in enumerate(d.stack_table):
        for li in st.location_indices:
            idx("location_table", li, f"stack[{i}]")
    for i, a in enumerate(d.attribute_table):
        idx("string", a.key_strindex, f"attribute[{i}].key")
        idx("string", a.unit_strindex, f"attribute[{i}].unit")
        v = any_value(a.value)
        if isinstance(v, tuple):
            idx("string", v[1], f"attribute[{i}].value")

    def kv_refs(kvs, where):
        # Profiles KeyValues may name their key and string value through the
        # dictionary (key_strindex / string_value_strindex).
        for kv in kvs:
            if kv.key_strindex:
                idx("string", kv.key_strindex, where + ".key")
            v = any_value(kv.value)
            if isinstance(v, tuple):
                idx("string", v[1], where + ".value")

    for r, rp in enumerate(req.resource_profiles):
        kv_refs(rp.resource.attributes, f"resource[{r}]")
        for s, sp in enumerate(rp.scope_profiles):
            kv_refs(sp.scope.attributes, f"resource[{r}].scope[{s}]")
            for p, prof in enumerate(sp.profiles):
                where = f"resource[{r}].scope[{s}].profile[{p}]"
                if not prof.HasField("sample_type") or not prof.HasField("period_type"):
                    bad.append(f"{where}: sample_type or period_type missing")
                for vt in (prof.sample_type, prof.period_type):
                    idx("string", vt.type_strindex, where + ".type")
                    idx("string", vt.unit_strindex, where + ".unit")
                attrs(prof.attribute_indices, where)
                identities = set()
                start, end = prof.time_unix_nano, prof.time_unix_nano + prof.duration_nano
                for k, smp in enumerate(prof.samples):
                    sw = f"{where}.sample[{k}]"
                    idx("stack_table", smp.stack_index, sw)
                    attrs(smp.attribute_indices, sw)
                    idx("link_table", smp.link_index, sw)
                    if not smp.values and not smp.timestamps_unix_nano:
                        bad.append(f"{sw}: neither values nor timestamps")
                    if smp.values and smp.timestamps_unix_nano and len(smp.values) != len(smp.timestamps_unix_nano):
                        bad.append(f"{sw}: {len(smp.values)} values but {len(smp.timestamps_unix_nano)} timestamps")
                    for t in smp.timestamps_unix_nano:
                        if not start <= t < end:
                            bad.append(f"{sw}: timestamp {t} outside [{start}, {end})")
                            break
                    ident = (smp.stack_index, tuple(sorted(smp.attribute_indices)), smp.link_index)
                    if ident in identities:
                        bad.append(f"{sw}: same identity as an earlier sample (not merged)")
                    identities.add(ident)

    for name in tables:
        orphans = set(range(n[name])) - used[name]
        if orphans and name != "link_table":
            bad.append(f"{name}: {len(orphans)} unreferenced entries")
    orphan_strings = set(range(n_str)) - used_str
    if orphan_strings:
        bad.append(f"string_table: {len(orphan_strings)} unreferenced entries")
    return bad


def summarize(req, protocol, size):
    d = req.dictionary
    s = lambda i: d.string_table[i] if 0 <= i < len(d.string_table) else None

    def attr_map(indices):
        out = {}
        for a in indices:
            if 0 <= a < len(d.attribute_table):
                kv = d.attribute_table[a]
                v = any_value(kv.value)
                out[s(kv.key_strindex)] = s(v[1]) if isinstance(v, tuple) else v
        return out

    def frames(stack_index):
        out = []
        if not 0 <= stack_index < len(d.stack_table):
            return out
        for li in d.stack_table[stack_index].location_indices:
            if not 0 <= li < len(d.location_table):
                continue
            loc = d.location_table[li]
            m = d.mapping_table[loc.mapping_index] if 0 <= loc.mapping_index < len(d.mapping_table) else profiles_pb2.Mapping()
            mattrs = attr_map(m.attribute_indices)
            base = {
                "address": loc.address,
                "mapping": s(m.filename_strindex),
                "build_id": mattrs.get("process.executable.build_id.gnu"),
                "frame_type": attr_map(loc.attribute_indices).get("profile.frame.type"),
            }
            if not loc.lines:
                out.append(dict(base, function=None, inline=False))
            for k, line in enumerate(loc.lines):
                f = d.function_table[line.function_index] if 0 <= line.function_index < len(d.function_table) else profiles_pb2.Function()
                out.append(dict(
                    base,
                    function=s(f.name_strindex),
                    system_name=s(f.system_name_strindex),
                    file=s(f.filename_strindex),
                    start_line=f.start_line,
                    line=line.line,
                    inline=k + 1 < len(loc.lines),
                ))
        return out

    resources = []
    for rp in req.resource_profiles:
        res_attrs = {}
        for kv in rp.resource.attributes:
            v = any_value(kv.value)
            res_attrs[kv.key or s(kv.key_strindex)] = s(v[1]) if isinstance(v, tuple) else v
        for sp in rp.scope_profiles:
            for prof in sp.profiles:
                resources.append({
                    "attributes": res_attrs,
                    "scope": {"name": sp.scope.name, "version": sp.scope.version},
                    "sample_type": [s(prof.sample_type.type_strindex), s(prof.sample_type.unit_strindex)],
                    "period_type": [s(prof.period_type.type_strindex), s(prof.period_type.unit_strindex)],
                    "period": prof.period,
                    "time_unix_nano": prof.time_unix_nano,
                    "duration_nano": prof.duration_nano,
                    "profile_id": prof.profile_id.hex(),
                    "samples": [
                        {
                            "count": len(smp.timestamps_unix_nano) if smp.timestamps_unix_nano else sum(smp.values),
                            "timestamps": list(smp.timestamps_unix_nano),
                            "attributes": attr_map(smp.attribute_indices),
                            "frames": frames(smp.stack_index),
                        }
                        for smp in prof.samples
                    ],
                })
    return {
        "protocol": protocol,
        "received_at": time.time(),
        "bytes": size,
        "violations": validate(req),
        "resources": resources,
        "dictionary": {name: len(getattr(d, name)) for name in (
            "mapping_table", "location_table", "function_table", "link_table",
            "string_table", "attribute_table", "stack_table")},
    }


def count(req, protocol, size):
    """--count-only: the samples of a request and when they were taken."""
    timestamps, untimed = [], []
    for rp in req.resource_profiles:
        for sp in rp.scope_profiles:
            for prof in sp.profiles:
                for smp in prof.samples:
                    if smp.timestamps_unix_nano:
                        timestamps.extend(smp.timestamps_unix_nano)
                    else:
                        untimed.append([prof.time_unix_nano, sum(smp.values)])
    return {
        "protocol": protocol,
        "received_at": time.time(),
        "bytes": size,
        "samples": len(timestamps) + sum(n for _, n in untimed),
        "timestamps": timestamps,
        "untimed": untimed,
    }


def record_of(args, req, protocol, size):
    return (count if args.count_only else summarize)(req, protocol, size)


def response(faults):
    resp = service_pb2.ExportProfilesServiceResponse()
    if faults.take("partial"):
        resp.partial_success.rejected_profiles = int(faults.partial_rejected)
        resp.partial_success.error_message = "scripted partial success"
    return resp


def maybe_delay(faults):
    if faults.take("delay"):
        time.sleep(int(faults.delay_ms) / 1000)


class Service(service_grpc.ProfilesServiceServicer):
    def __init__(self, args, faults):
        self.args, self.faults = args, faults

    def Export(self, request, context):
        maybe_delay(self.faults)
        if self.faults.take("grpc"):
            code = getattr(code_pb2, self.faults.grpc_code)
            details = []
            if self.faults.grpc_retry_ms:
                info = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(nanos=int(self.faults.grpc_retry_ms) * 1_000_000))
                packed = any_pb2.Any()
                packed.Pack(info)
                details.append(packed)
            write(self.args.out, {"fault": self.faults.grpc_code, "protocol": "grpc", "at": time.time()})
            context.abort_with_status(rpc_status.to_status(
                status_pb2.Status(code=code, message="scripted fault", details=details)))
        write(self.args.out, record_of(self.args, request, "grpc", request.ByteSize()))
        return response(self.faults)


def http_handler(args, faults):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1development/profiles":
                self.send_response(404)
                self.end_headers()
                return
            maybe_delay(faults)
            if faults.take("http"):
                write(args.out, {"fault": faults.http_status, "protocol": "http", "at": time.time()})
                self.send_response(int(faults.http_status))
                if faults.http_retry_after:
                    self.send_header("Retry-After", faults.http_retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            req = service_pb2.ExportProfilesServiceRequest()
            req.ParseFromString(body)
            record = record_of(args, req, "http", len(body))
            record["headers"] = {k.lower(): v for k, v in self.headers.items()}
            write(args.out, record)
            out = response(faults).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready", required=True, help="file written with the ports once listening")
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--grpc-fail", help="N:CODE[:RETRY_MS] e.g. 3:UNAVAILABLE")
    ap.add_argument("--http-fail", help="N:STATUS[:RETRY_AFTER_SECS] e.g. 2:503:1")
    ap.add_argument("--delay", help="N:MS: delay the first N responses")
    ap.add_argument("--partial", help="N:REJECTED: partial success on the first N")
    ap.add_argument("--tls-cert", help="server certificate (PEM): serve TLS")
    ap.add_argument("--tls-key", help="server key (PEM)")
    ap.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    ap.add_argument("--count-only", action="store_true",
                    help="log only each request's size and sample timestamps (no checks)")
    args = ap.parse_args()
    faults = Faults(args)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    service_grpc.add_ProfilesServiceServicer_to_server(Service(args, faults), server)
    if args.tls_cert:
        read = lambda p: open(p, "rb").read()
        client_ca = read(args.tls_client_ca) if args.tls_client_ca else None
        creds = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None)
        grpc_port = server.add_secure_port(f"127.0.0.1:{args.grpc_port}", creds)
    else:
        grpc_port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()
    httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), http_handler(args, faults))
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.load_verify_locations(args.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with open(args.ready + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"grpc": grpc_port, "http": httpd.server_address[1]}, f)
    import os
    os.rename(args.ready + ".tmp", args.ready)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
