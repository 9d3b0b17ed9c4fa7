// The official openai Node SDK (pinned in package.json), unmodified, against the shim at $SORA_SHIM_BASE_URL.
// Node has no createAndPoll, so this polls `retrieve` as the guide's manual loop does. Every step asserts; the
// script exits non-zero on the first deviation. Driven by tests/contract/test_node_sdk.py.
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';

const client = new OpenAI({ baseURL: process.env.SORA_SHIM_BASE_URL, apiKey: process.env.SORA_SHIM_KEY, maxRetries: 0 });
const other = new OpenAI({ baseURL: process.env.SORA_SHIM_BASE_URL, apiKey: `${process.env.SORA_SHIM_KEY}-other`, maxRetries: 0 });
const STATUSES = ['queued', 'in_progress', 'completed', 'failed'];

async function poll(video) {
  let last = -1;
  const deadline = Date.now() + 120_000;
  while (video.status === 'queued' || video.status === 'in_progress') {
    assert.ok(Date.now() < deadline, `video ${video.id} still ${video.status}`);
    assert.ok(video.progress >= last, 'progress never goes back');
    last = video.progress;
    await new Promise((r) => setTimeout(r, 100));
    video = await client.videos.retrieve(video.id);
    assert.ok(STATUSES.includes(video.status), `unexpected status ${video.status}`);
  }
  return video;
}

async function expectError(promise, status, param) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.status, status, `expected HTTP ${status}, got ${e.status}: ${e.message}`);
    if (param !== undefined) assert.equal(e.param, param);
    assert.ok(e.requestID, 'errors carry x-request-id');
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

// create (multipart, as Node >= 6.28 always sends) → poll → download every variant
let video = await client.videos.create({ prompt: 'node sdk: a red fox', size: '1280x720', seconds: '4' });
assert.equal(video.status, 'queued');
assert.equal(video.completed_at, null);
video = await poll(video);
assert.equal(video.status, 'completed');
assert.equal(video.progress, 100);
assert.deepEqual([video.size, video.seconds, video.model], ['1280x720', '4', 'sora-2']);
const mp4 = Buffer.from(await (await client.videos.downloadContent(video.id)).arrayBuffer());
assert.equal(mp4.subarray(4, 8).toString(), 'ftyp');
for (const [variant, type] of [['thumbnail', 'image/webp'], ['spritesheet', 'image/jpeg']]) {
  const res = await client.videos.downloadContent(video.id, { variant });
  assert.equal(res.headers.get('content-type'), type);
  assert.ok((await res.arrayBuffer()).byteLength > 100);
}

// input_reference as {image_url} (Node sends input_reference[image_url] bracketed)
const withUrl = await client.videos.create({ prompt: 'from a url', input_reference: { image_url: 'https://example.com/ref.png' } });
assert.equal(withUrl.status, 'queued');

// remix (JSON), edit and extend by id (multipart video[id])
const remix = await poll(await client.videos.remix(video.id, { prompt: 'node sdk: the fox at night' }));
assert.equal(remix.remixed_from_video_id, video.id);
assert.equal(remix.status, 'completed');
const edit = await poll(await client.videos.edit({ prompt: 'node sdk: a blue fox', video: { id: video.id } }));
assert.equal(edit.status, 'completed');
const ext = await poll(await client.videos.extend({ prompt: 'node sdk: then it snows', seconds: '4', video: { id: video.id } }));
assert.equal(ext.seconds, '8');

// characters
const character = await client.videos.createCharacter({ name: 'Nodey', video: await toFile(mp4, 'c.mp4', { type: 'video/mp4' }) });
assert.match(character.id, /^char_/);
assert.equal((await client.videos.getCharacter(character.id)).name, 'Nodey');

// list with auto-pagination in both orders
const asc = [];
for await (const v of client.videos.list({ limit: 2, order: 'asc' })) asc.push(v.id);
const desc = [];
for await (const v of client.videos.list({ limit: 2, order: 'desc' })) desc.push(v.id);
assert.equal(asc.length, 5);
assert.deepEqual(desc, [...asc].reverse());

// tenancy, errors, delete
await expectError(other.videos.retrieve(video.id), 404);
await expectError(client.videos.create({ prompt: 'bad', seconds: '15' }), 400, 'seconds');
await expectError(client.videos.create({ prompt: 'bad', size: '640x480' }), 400, 'size');
await expectError(client.videos.retrieve('video_does_not_exist'), 404);
const deleted = await client.videos.delete(remix.id);
assert.deepEqual(deleted, { id: remix.id, object: 'video.deleted', deleted: true });
await expectError(client.videos.retrieve(remix.id), 404);
console.log('node sdk contract: ok');
