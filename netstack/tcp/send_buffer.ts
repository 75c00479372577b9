/**
 * The send buffer: bytes written by the user from SND.UNA onwards (sent and
 * unacknowledged, then unsent), held in chunks allocated on demand and freed
 * as the peer acknowledges them. Bounded by {@linkcode SendBuffer.limit}.
 *
 * @module
 */

const MIN_CHUNK = 2048;
const MAX_CHUNK = 65536;
/**
 * Full-size chunks freed by acknowledgements, kept for the next push of any
 * connection (at most {@linkcode POOL_MAX}, 1 MiB): a bulk transfer then
 * allocates no memory per byte, where a fresh 64 KiB chunk per 64 KiB sent
 * made the garbage that V8 collects with full mark-compacts (every ~120 ms
 * at 500 Mbit/s). Only bytes a buffer wrote itself are ever read back, so a
 * reused chunk's old contents never leave it.
 */
const pool: Uint8Array[] = [];
const POOL_MAX = 16;

/** Chunks waiting in the pool (for tests). */
export function pooledChunks(): number {
  return pool.length;
}

function chunkOf(size: number): Uint8Array {
  return size === MAX_CHUNK ? pool.pop() ?? new Uint8Array(MAX_CHUNK) : new Uint8Array(size);
}

function recycle(chunk: Uint8Array): void {
  if (chunk.length === MAX_CHUNK && pool.length < POOL_MAX) pool.push(chunk);
}

/** A FIFO of bytes with random-access reads, chunked and lazily allocated. */
export class SendBuffer {
  /** Most bytes the buffer accepts (callers may raise it). */
  limit: number;
  #chunks: Uint8Array[] = [];
  /** Bytes used in the last chunk. */
  #tailUsed = 0;
  /** Offset of the first live byte in the first chunk. */
  #head = 0;
  #length = 0;

  /** Creates an empty buffer that holds at most `limit` bytes. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held. */
  get length(): number {
    return this.#length;
  }

  /** Room left under the limit. */
  get free(): number {
    return Math.max(0, this.limit - this.#length);
  }

  /**
   * Copies up to {@linkcode SendBuffer.free} bytes of `bytes` in and returns
   * how many it took.
   */
  push(bytes: Uint8Array): number {
    let n = Math.min(bytes.length, this.free);
    const taken = n;
    let src = 0;
    while (n > 0) {
      let tail = this.#chunks[this.#chunks.length - 1];
      if (!tail || this.#tailUsed === tail.length) {
        // A quarter chunk or more takes a whole (pooled) one.
        const size = n >= MAX_CHUNK / 4 ? MAX_CHUNK : Math.max(MIN_CHUNK, n);
        tail = chunkOf(size);
        this.#chunks.push(tail);
        this.#tailUsed = 0;
      }
      const k = Math.min(n, tail.length - this.#tailUsed);
      tail.set(bytes.subarray(src, src + k), this.#tailUsed);
      this.#tailUsed += k;
      src += k;
      n -= k;
    }
    this.#length += taken;
    return taken;
  }

  /** Removes `n` bytes from the front (they were acknowledged). */
  drop(n: number): void {
    if (n > this.#length) n = this.#length;
    this.#length -= n;
    while (n > 0) {
      const first = this.#chunks[0];
      const end = this.#chunks.length === 1 ? this.#tailUsed : first.length;
      const avail = end - this.#head;
      if (n < avail) {
        this.#head += n;
        return;
      }
      n -= avail;
      recycle(this.#chunks.shift()!);
      this.#head = 0;
    }
    if (this.#length === 0) {
      // Free everything: an idle connection holds no buffer.
      for (const c of this.#chunks) recycle(c);
      this.#chunks.length = 0;
      this.#tailUsed = 0;
      this.#head = 0;
    }
  }

  /** Copies `len` bytes starting `offset` bytes after the front into `dest` at `at`. */
  copyOut(offset: number, dest: Uint8Array, at: number, len: number): void {
    if (offset < 0 || offset + len > this.#length) {
      throw new RangeError("Read past the end of the send buffer");
    }
    let pos = offset + this.#head;
    const last = this.#chunks.length - 1;
    for (let i = 0; i <= last && len > 0; i++) {
      const c = this.#chunks[i];
      const end = i === last ? this.#tailUsed : c.length;
      if (pos >= end) {
        pos -= end;
        continue;
      }
      const k = Math.min(len, end - pos);
      dest.set(c.subarray(pos, pos + k), at);
      at += k;
      len -= k;
      pos = 0;
    }
  }
}
