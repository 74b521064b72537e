#!/usr/bin/python3
"""Capture the request frames librdkafka sends, without a broker.

A throwaway fake broker on 127.0.0.1 answers ApiVersions (advertising what rivven's
codec knows) and saves the request frames it receives, each without its int32 size
prefix, as <Api>-v<version>.bin in the directory given:

  1. a producer connects: ApiVersions and then the brokers-only Metadata request it
     sends on connecting (librdkafka's newest version within the advertised range)
     are saved;
  2. a second fake broker advertises Metadata v0-4 and Produce v0-7 and answers
     Metadata v4, so that the producer sends one Produce request (one record, key
     "key", value "value", timestamp 1700000000000, partition 0, no compression),
     which is saved too.

Usage: /usr/bin/python3 capture.py tests/data/kafka
Needs python3-confluent-kafka (librdkafka). The README beside this file says what
was captured with which versions.
"""
import socket, struct, sys, threading, time, os
from confluent_kafka import Producer

OUT = sys.argv[1]
NAMES = {0: 'Produce', 3: 'Metadata', 18: 'ApiVersions'}
saved = {}


def enc_str(s):
    if s is None:
        return struct.pack('>h', -1)
    e = s.encode()
    return struct.pack('>h', len(e)) + e


def api_versions_v3(apis):
    body = struct.pack('>h', 0) + bytes([len(apis) + 1])
    for k, (lo, hi) in sorted(apis.items()):
        body += struct.pack('>hhh', k, lo, hi) + b'\0'
    return body + struct.pack('>i', 0) + b'\0'


def api_versions_v0(apis):
    body = struct.pack('>hi', 0, len(apis))
    for k, (lo, hi) in sorted(apis.items()):
        body += struct.pack('>hhh', k, lo, hi)
    return body


def metadata_v4(b, p, port):
    n = struct.unpack_from('>i', b, p)[0]; p += 4
    topics = []
    for _ in range(max(n, 0)):
        ln = struct.unpack_from('>h', b, p)[0]; p += 2
        topics.append(b[p:p + ln].decode()); p += ln
    body = struct.pack('>i', 0)                                   # throttle
    body += struct.pack('>ii', 1, 1) + enc_str('127.0.0.1') + struct.pack('>i', port)
    body += enc_str(None) + enc_str('fake-cluster') + struct.pack('>i', 1)
    body += struct.pack('>i', len(topics))
    for t in topics:
        body += struct.pack('>h', 0) + enc_str(t) + b'\0'
        body += struct.pack('>i', 1) + struct.pack('>hii', 0, 0, 1)
        body += struct.pack('>ii', 1, 1) + struct.pack('>ii', 1, 1)
    return body


def produce_v7(b, p):
    _, p = None, p + 2 + max(struct.unpack_from('>h', b, p)[0], 0)   # transactional id
    acks, timeout, nt = struct.unpack_from('>hii', b, p); p += 10
    resp = struct.pack('>i', nt)
    for _ in range(nt):
        ln = struct.unpack_from('>h', b, p)[0]; p += 2
        t = b[p:p + ln].decode(); p += ln
        np_ = struct.unpack_from('>i', b, p)[0]; p += 4
        resp += enc_str(t) + struct.pack('>i', np_)
        for _ in range(np_):
            part, n = struct.unpack_from('>ii', b, p); p += 8 + n
            resp += struct.pack('>ihqqq', part, 0, 0, -1, 0)
    return resp + struct.pack('>i', 0)


def serve(conn, port, apis):
    buf = b''
    while True:
        d = conn.recv(65536)
        if not d:
            return
        buf += d
        while len(buf) >= 4:
            n = struct.unpack_from('>i', buf)[0]
            if len(buf) < 4 + n:
                break
            frame, buf = buf[4:4 + n], buf[4 + n:]
            key, ver, corr = struct.unpack_from('>hhi', frame)
            name = '%s-v%d.bin' % (NAMES.get(key, 'Api%d' % key), ver)
            if key in NAMES and name not in saved:
                saved[name] = frame
            cid = struct.unpack_from('>h', frame, 8)[0]
            p = 10 + max(cid, 0)
            if ver >= 3 and key == 18:
                body = api_versions_v3(apis)
            elif key == 18:
                body = api_versions_v0(apis)
            elif key == 3 and ver == 4:
                body = metadata_v4(frame, p, port)
            elif key == 0 and ver == 7:
                body = produce_v7(frame, p)
            else:
                continue                   # captured; no answer needed
            resp = struct.pack('>i', corr) + body   # ApiVersions: header v0
            conn.sendall(struct.pack('>i', len(resp)) + resp)


def fake_broker(apis):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('127.0.0.1', 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c, port, apis), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return port


def run(apis, produce, wait_for):
    port = fake_broker(apis)
    p = Producer({'bootstrap.servers': '127.0.0.1:%d' % port, 'client.id': 'rdkafka',
                  'linger.ms': 0, 'message.timeout.ms': 5000, 'api.version.request': True})
    if produce:
        p.produce('test', key=b'key', value=b'value', partition=0, timestamp=1700000000000)
    deadline = time.time() + 6
    while time.time() < deadline and not all(any(n.startswith(w) for n in saved)
                                             for w in wait_for):
        p.poll(0.1)


# Run 1: advertise what rivven's codec knows; librdkafka picks its newest.
run({0: (0, 11), 1: (0, 17), 2: (0, 10), 3: (0, 12), 10: (0, 6), 18: (0, 4)}, False,
    ['ApiVersions', 'Metadata'])
# Run 2: just enough for one Produce v7.
run({0: (0, 7), 1: (0, 11), 2: (0, 5), 3: (0, 4), 10: (0, 2), 18: (0, 3)}, True, ['Produce'])

os.makedirs(OUT, exist_ok=True)
for name, frame in sorted(saved.items()):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(frame)
    print(name, len(frame), frame.hex())
