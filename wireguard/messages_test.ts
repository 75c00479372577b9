import assert from "node:assert/strict";
import {
  COOKIE_REPLY_LENGTH,
  CookieReplyMessage,
  INITIATION_LENGTH,
  InitiationMessage,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  messageType,
  RESPONSE_LENGTH,
  ResponseMessage,
  TRANSPORT_MIN_LENGTH,
  TransportMessage,
} from "./messages.ts";

Deno.test("messages", async (t) => {
  await t.step("sizes follow the whitepaper", () => {
    assert.equal(INITIATION_LENGTH, 148);
    assert.equal(RESPONSE_LENGTH, 92);
    assert.equal(COOKIE_REPLY_LENGTH, 64);
    assert.equal(TRANSPORT_MIN_LENGTH, 32);
  });

  await t.step("messageType needs a known type and three zero reserved bytes", () => {
    assert.equal(messageType(new Uint8Array([1, 0, 0, 0])), MESSAGE_INITIATION);
    assert.equal(messageType(new Uint8Array([4, 0, 0, 0, 9])), MESSAGE_TRANSPORT);
    assert.equal(messageType(new Uint8Array([1, 0, 0, 1])), 0);
    assert.equal(messageType(new Uint8Array([5, 0, 0, 0])), 0);
    assert.equal(messageType(new Uint8Array([0, 0, 0, 0])), 0);
    assert.equal(messageType(new Uint8Array([1, 0, 0])), 0);
  });

  await t.step("initiation: emit, fields at their offsets, parse", () => {
    const bytes = new Uint8Array(148).fill(0xaa);
    const msg = InitiationMessage.emit(bytes);
    assert.equal(bytes[0], 1);
    assert.deepEqual([...bytes.subarray(1, 4)], [0, 0, 0]);
    msg.sender = 0x04030201;
    assert.deepEqual([...bytes.subarray(4, 8)], [1, 2, 3, 4], "little-endian");
    msg.ephemeral.fill(1);
    msg.encryptedStatic.fill(2);
    msg.encryptedTimestamp.fill(3);
    msg.mac1.fill(4);
    msg.mac2.fill(5);
    assert.equal(bytes[8], 1);
    assert.equal(bytes[39], 1);
    assert.equal(bytes[40], 2);
    assert.equal(bytes[87], 2);
    assert.equal(bytes[88], 3);
    assert.equal(bytes[115], 3);
    assert.equal(bytes[InitiationMessage.MAC1_OFFSET], 4);
    assert.equal(bytes[InitiationMessage.MAC2_OFFSET], 5);
    assert.equal(bytes[147], 5);
    const parsed = InitiationMessage.parse(bytes);
    assert.ok(parsed);
    assert.equal(parsed.sender, 0x04030201);
    assert.equal(parsed.ephemeral.length, 32);
    assert.equal(parsed.encryptedStatic.length, 48);
    assert.equal(parsed.encryptedTimestamp.length, 28);
  });

  await t.step("initiation: wrong length, type or reserved is rejected", () => {
    const bytes = new Uint8Array(148);
    InitiationMessage.emit(bytes);
    assert.equal(InitiationMessage.parse(bytes.subarray(0, 147)), null);
    const longer = new Uint8Array(149);
    longer.set(bytes);
    assert.equal(InitiationMessage.parse(longer), null);
    bytes[2] = 1;
    assert.equal(InitiationMessage.parse(bytes), null);
    bytes[2] = 0;
    bytes[0] = 2;
    assert.equal(InitiationMessage.parse(bytes), null);
    assert.throws(() => InitiationMessage.emit(new Uint8Array(100)), RangeError);
  });

  await t.step("response: fields and offsets", () => {
    const bytes = new Uint8Array(92);
    const msg = ResponseMessage.emit(bytes);
    msg.sender = 0xffffffff;
    msg.receiver = 7;
    msg.ephemeral.fill(1);
    msg.encryptedNothing.fill(2);
    msg.mac1.fill(3);
    msg.mac2.fill(4);
    assert.deepEqual([...bytes.subarray(0, 12)], [2, 0, 0, 0, 255, 255, 255, 255, 7, 0, 0, 0]);
    assert.equal(bytes[12], 1);
    assert.equal(bytes[44], 2);
    assert.equal(bytes[ResponseMessage.MAC1_OFFSET], 3);
    assert.equal(bytes[ResponseMessage.MAC2_OFFSET], 4);
    const parsed = ResponseMessage.parse(bytes);
    assert.ok(parsed);
    assert.equal(parsed.sender, 0xffffffff);
    assert.equal(parsed.receiver, 7);
    assert.equal(ResponseMessage.parse(bytes.subarray(0, 91)), null);
    assert.throws(() => {
      msg.sender = 2 ** 32;
    }, RangeError);
  });

  await t.step("cookie reply: fields and offsets", () => {
    const bytes = new Uint8Array(64);
    const msg = CookieReplyMessage.emit(bytes);
    msg.receiver = 0x11223344;
    msg.nonce.fill(1);
    msg.encryptedCookie.fill(2);
    assert.equal(bytes[0], MESSAGE_COOKIE_REPLY);
    assert.deepEqual([...bytes.subarray(4, 8)], [0x44, 0x33, 0x22, 0x11]);
    assert.equal(bytes[8], 1);
    assert.equal(bytes[31], 1);
    assert.equal(bytes[32], 2);
    assert.equal(msg.encryptedCookie.length, 32);
    assert.equal(CookieReplyMessage.parse(bytes)?.receiver, 0x11223344);
    assert.equal(CookieReplyMessage.parse(new Uint8Array(64)), null);
    bytes[0] = MESSAGE_RESPONSE;
    assert.equal(CookieReplyMessage.parse(bytes), null);
  });

  await t.step("transport: header, 64-bit little-endian counter, payload", () => {
    const bytes = new Uint8Array(48);
    const msg = TransportMessage.emit(bytes, 0xdeadbeef, 2 ** 40 + 5);
    assert.deepEqual([...bytes.subarray(0, 4)], [4, 0, 0, 0]);
    assert.deepEqual([...bytes.subarray(4, 8)], [0xef, 0xbe, 0xad, 0xde]);
    assert.deepEqual([...bytes.subarray(8, 16)], [5, 0, 0, 0, 0, 1, 0, 0]);
    assert.equal(msg.receiver, 0xdeadbeef);
    assert.equal(msg.counter, 2 ** 40 + 5);
    assert.equal(msg.packet.length, 32);
    assert.equal(TransportMessage.parse(bytes)?.counter, 2 ** 40 + 5);
    assert.ok(TransportMessage.parse(bytes.subarray(0, 32)), "a keepalive is 32 bytes");
    assert.equal(TransportMessage.parse(bytes.subarray(0, 31)), null);
    assert.throws(() => TransportMessage.emit(bytes, 1, 2 ** 53), RangeError);
    assert.throws(() => TransportMessage.emit(new Uint8Array(31), 1, 0), RangeError);
  });

  await t.step("transport: counters of 2^53 and above read as Infinity", () => {
    const bytes = new Uint8Array(32);
    TransportMessage.emit(bytes, 1, Number.MAX_SAFE_INTEGER);
    assert.equal(TransportMessage.parse(bytes)?.counter, Number.MAX_SAFE_INTEGER);
    bytes[14] = 0x20; // 2^53
    bytes.fill(0, 8, 14);
    assert.equal(TransportMessage.parse(bytes)?.counter, Infinity);
    bytes.fill(0xff, 8, 16);
    assert.equal(TransportMessage.parse(bytes)?.counter, Infinity);
  });
});
