#!/usr/bin/python3
"""Capture the record batches librdkafka writes, one per codec, without a broker.

A throwaway fake broker on 127.0.0.1 answers just enough ApiVersions (v0-3), Metadata
(v0-4) and Produce (v0-7) for librdkafka (through python3-confluent-kafka) to send one
Produce request per codec, and saves that request's raw `records` field as
<codec>.bin in the directory given. FindCoordinator is advertised (never served)
because librdkafka enables LZ4 only for brokers that list it; Produce v7 and Fetch v10
enable zstd. Usage: /usr/bin/python3 capture.py tests/data/batches
The messages sent are described in README.md and checked by tests/storage/test_batch.c.
"""
import socket, struct, sys, threading, time, os
from confluent_kafka import Producer

OUT = sys.argv[1]
captured = {}

def rd_str(b, p):
    n = struct.unpack_from('>h', b, p)[0]; p += 2
    if n < 0: return None, p
    return b[p:p+n].decode(), p + n

def uvarint(b, p):
    v = s = 0
    while True:
        c = b[p]; p += 1
        v |= (c & 0x7f) << s; s += 7
        if c < 0x80: return v, p

def enc_str(s):
    if s is None: return struct.pack('>h', -1)
    e = s.encode(); return struct.pack('>h', len(e)) + e

APIS = {0: (0, 7), 1: (0, 11), 2: (0, 5), 3: (0, 4), 10: (0, 2), 18: (0, 3)}

def api_versions(ver):
    if ver >= 3:
        body = struct.pack('>h', 0) + bytes([len(APIS) + 1])
        for k, (lo, hi) in APIS.items(): body += struct.pack('>hhh', k, lo, hi) + b'\0'
        return body + struct.pack('>i', 0) + b'\0'
    body = struct.pack('>hi', 0, len(APIS))
    for k, (lo, hi) in APIS.items(): body += struct.pack('>hhh', k, lo, hi)
    return body + (struct.pack('>i', 0) if ver >= 1 else b'')

def metadata(ver, b, p, port):
    n = struct.unpack_from('>i', b, p)[0]; p += 4
    topics = []
    for _ in range(max(n, 0)):
        t, p = rd_str(b, p); topics.append(t)
    body = struct.pack('>i', 0) if ver >= 3 else b''
    body += struct.pack('>i', 1) + struct.pack('>i', 1) + enc_str('127.0.0.1') + struct.pack('>i', port)
    if ver >= 1: body += enc_str(None)              # rack
    if ver >= 2: body += enc_str('fake-cluster')
    if ver >= 1: body += struct.pack('>i', 1)       # controller
    body += struct.pack('>i', len(topics))
    for t in topics:
        body += struct.pack('>h', 0) + enc_str(t)
        if ver >= 1: body += b'\0'                  # is_internal
        body += struct.pack('>i', 1) + struct.pack('>hii', 0, 0, 1)
        body += struct.pack('>ii', 1, 1) + struct.pack('>ii', 1, 1)
    return body

def produce(ver, b, p):
    if ver >= 3: _, p = rd_str(b, p)
    acks, timeout, nt = struct.unpack_from('>hii', b, p); p += 10
    resp = struct.pack('>i', nt)
    for _ in range(nt):
        t, p = rd_str(b, p)
        np_ = struct.unpack_from('>i', b, p)[0]; p += 4
        resp += enc_str(t) + struct.pack('>i', np_)
        for _ in range(np_):
            part, n = struct.unpack_from('>ii', b, p); p += 8
            captured.setdefault(t, []).append(b[p:p+n]); p += n
            resp += struct.pack('>ihq', part, 0, 0)
            if ver >= 2: resp += struct.pack('>q', -1)
            if ver >= 5: resp += struct.pack('>q', 0)
    if ver >= 1: resp += struct.pack('>i', 0)
    return resp

def serve(conn, port):
    buf = b''
    while True:
        d = conn.recv(65536)
        if not d: return
        buf += d
        while len(buf) >= 4:
            n = struct.unpack_from('>i', buf)[0]
            if len(buf) < 4 + n: break
            req, buf = buf[4:4+n], buf[4+n:]
            key, ver, corr = struct.unpack_from('>hhi', req)
            _, p = rd_str(req, 8)
            if key == 18:
                if ver >= 3: _, p = uvarint(req, p)
                body = api_versions(ver)
            elif key == 3: body = metadata(ver, req, p, port)
            elif key == 0: body = produce(ver, req, p)
            else:
                print('unhandled api', key, ver, file=sys.stderr); return
            resp = struct.pack('>i', corr) + body
            conn.sendall(struct.pack('>i', len(resp)) + resp)

def listen():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 0)); s.listen(8)
    port = s.getsockname()[1]
    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c, port), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return port

def value(i):
    if i % 7 == 4: return None
    if i == 6: return b''
    return ('value-%d-' % i + 'lorem ipsum ' * i).encode()

def capture(port, codec, attempt):
    pr = Producer({'bootstrap.servers': '127.0.0.1:%d' % port, 'compression.type': codec,
                   'linger.ms': 1000, 'acks': 1, 'enable.idempotence': False,
                   'message.timeout.ms': 10000})
    topic = 'cap-%s-%d' % (codec, attempt)
    pr.list_topics(topic, timeout=10)  # learn the leader first, so no message waits apart
    for i in range(20):
        pr.produce(topic, value=value(i), key=None if i % 5 == 3 else ('key-%d' % i).encode(),
                   partition=0, timestamp=1700000000000 + 1000 * i,
                   headers=[('h1', ('v%d' % i).encode()), ('h2', None)] if i % 3 == 0 else None)
    left = pr.flush(15)
    assert left == 0, (codec, left)
    return captured[topic]

port = listen()
for codec in ['none', 'gzip', 'snappy', 'lz4', 'zstd']:
    for attempt in range(5):
        batches = capture(port, codec, attempt)
        if len(batches) == 1:
            break
        print(codec, 'came in', len(batches), 'batches; again', file=sys.stderr)
    assert len(batches) == 1, codec
    with open(os.path.join(OUT, codec + '.bin'), 'wb') as f: f.write(batches[0])
    print(codec, len(batches[0]), 'bytes, attributes', batches[0][21:23].hex(), file=sys.stderr)
