import assert from "node:assert/strict";
import { LINKTYPE_RAW, pcapFileHeader, type PcapSink, PcapWriter } from "./pcap.ts";

class MemorySink implements PcapSink {
  chunks: Uint8Array[] = [];
  closed = false;
  /** Accepts at most `max` bytes per call, to exercise partial writes. */
  constructor(readonly max = Infinity) {}
  writeSync(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, this.max);
    this.chunks.push(bytes.slice(0, n));
    return n;
  }
  close(): void {
    this.closed = true;
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let o = 0;
    for (const c of this.chunks) out.set(c, (o += c.length) - c.length);
    return out;
  }
}

Deno.test("pcap format", async (t) => {
  await t.step("file header is byte-exact (LE magic, v2.4, snaplen, LINKTYPE_RAW)", () => {
    assert.equal(LINKTYPE_RAW, 101);
    assert.deepEqual(
      pcapFileHeader(),
      new Uint8Array([
        0xd4,
        0xc3,
        0xb2,
        0xa1, // magic
        0x02,
        0x00,
        0x04,
        0x00, // version 2.4
        0x00,
        0x00,
        0x00,
        0x00, // thiszone
        0x00,
        0x00,
        0x00,
        0x00, // sigfigs
        0xff,
        0xff,
        0x00,
        0x00, // snaplen 65535
        0x65,
        0x00,
        0x00,
        0x00, // linktype 101
      ]),
    );
  });

  await t.step("records: seconds, microseconds, lengths, then the packet", () => {
    const sink = new MemorySink(7);
    let now = 1_700_000_000_123_456;
    const pcap = new PcapWriter(sink, { nowMicros: () => now++ });
    const packet = new Uint8Array([0x45, 0, 0, 20, 1, 2, 3]);
    pcap.write(packet);
    packet.fill(0); // the writer copied it
    pcap.write(new Uint8Array([0x60, 9]));
    assert.equal(pcap.packets, 2);
    pcap.close();
    assert.ok(sink.closed);
    const bytes = sink.bytes();
    assert.equal(bytes.length, 24 + 16 + 7 + 16 + 2);
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint32(24, true), 1_700_000_000);
    assert.equal(view.getUint32(28, true), 123_456);
    assert.equal(view.getUint32(32, true), 7);
    assert.equal(view.getUint32(36, true), 7);
    assert.deepEqual(bytes.subarray(40, 47), new Uint8Array([0x45, 0, 0, 20, 1, 2, 3]));
    assert.equal(view.getUint32(51, true), 123_457);
    assert.deepEqual(bytes.subarray(63), new Uint8Array([0x60, 9]));
  });

  await t.step("snaplen cuts long packets but keeps the original length", () => {
    const sink = new MemorySink();
    const pcap = new PcapWriter(sink, { snaplen: 4, nowMicros: () => 0 });
    pcap.write(new Uint8Array(10).fill(7));
    pcap.close();
    const bytes = sink.bytes();
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint32(16, true), 4);
    assert.equal(view.getUint32(32, true), 4);
    assert.equal(view.getUint32(36, true), 10);
    assert.equal(bytes.length, 24 + 16 + 4);
  });

  await t.step("a full buffer is flushed before the next record", () => {
    const sink = new MemorySink();
    const pcap = new PcapWriter(sink, { bufferSize: 100, snaplen: 60, nowMicros: () => 0 });
    for (let i = 0; i < 10; i++) pcap.write(new Uint8Array(50).fill(i));
    assert.ok(sink.chunks.length > 0, "flushed while writing");
    pcap.close();
    const bytes = sink.bytes();
    assert.equal(bytes.length, 24 + 10 * 66);
    for (let i = 0; i < 10; i++) assert.equal(bytes[24 + i * 66 + 16], i);
    pcap.write(new Uint8Array(3)); // ignored after close
    assert.equal(sink.bytes().length, bytes.length);
  });

  await t.step("close() closes the sink even when the last flush fails", () => {
    const sink = new MemorySink();
    sink.writeSync = () => {
      throw new Error("No space left on device");
    };
    const pcap = new PcapWriter(sink, { nowMicros: () => 0 });
    pcap.write(new Uint8Array(1));
    assert.throws(() => pcap.close(), /No space/);
    assert.ok(sink.closed);
    pcap.close(); // once is enough
  });

  await t.step("create() writes a file with mode 0600", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/x.pcap`;
      const pcap = PcapWriter.create(path);
      pcap.write(new Uint8Array([0x45]));
      pcap.close();
      const info = await Deno.stat(path);
      assert.equal(info.mode! & 0o777, 0o600);
      assert.equal(info.size, 24 + 16 + 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("create() makes an existing world-readable file 0600", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/old.pcap`;
      await Deno.writeFile(path, new Uint8Array(100), { mode: 0o644 });
      await Deno.chmod(path, 0o644);
      PcapWriter.create(path).close();
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("maxBytes: the capture stops before the file would pass it", () => {
    const sink = new MemorySink();
    const pcap = new PcapWriter(sink, { nowMicros: () => 0, maxBytes: 24 + 2 * (16 + 100) + 50 });
    for (let i = 0; i < 5; i++) pcap.write(new Uint8Array(100));
    assert.equal(pcap.packets, 2);
    assert.ok(pcap.full);
    pcap.close();
    assert.equal(sink.bytes().length, 24 + 2 * (16 + 100));
  });
});
