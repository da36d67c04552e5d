import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../../../helpers/daemon.js';
import { freePort } from '../../../helpers/redis.js';

// The S3 endpoint driven by the command-line and Python clients operators already use, as
// Debian packages them (awscli, rclone, python3-boto3), configured only through their
// documented settings: endpoint URL, keys, region, and the clients' own part-size knobs (set
// small here so a 20 MiB file goes multipart). `.ci/run` installs them; under CI a missing
// one fails the run, elsewhere its tests are skipped.

const AWS = '/usr/bin/aws';
const PYTHON = '/usr/bin/python3';
const RCLONE = '/usr/bin/rclone';
/** The binary exists and, when a probe is given, runs it successfully (boto3 may be missing beside python3). */
const have = (bin: string, probe?: string[]) => existsSync(bin) && (!probe || spawnSync(bin, probe, { stdio: 'ignore' }).status === 0);

const tools = { aws: have(AWS), boto3: have(PYTHON, ['-c', 'import boto3']), rclone: have(RCLONE) };
if (process.env.CI === 'true') {
  for (const [name, ok] of Object.entries(tools)) if (!ok) throw new Error(`${name} is missing; .ci/run installs awscli, rclone and python3-boto3`);
}

let d: Daemon;
let endpoint: string;
let work: string;
let writer: { id: string; secret: string };
let reader: { id: string; secret: string };

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: work, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

beforeAll(async () => {
  const port = await freePort();
  d = await startDaemon({ set: [`s3.listen=127.0.0.1:${port}`] });
  endpoint = `http://127.0.0.1:${port}`;
  work = tempDir('strata-s3-cli-');
  const creds = async (role: string) => {
    const t = (await api(d, 'POST', '/v1/admin/tokens', { name: `cli-${role}`, role, s3: true })).body;
    return { id: t.s3.access_key_id as string, secret: t.s3.secret_access_key as string };
  };
  writer = await creds('service');
  reader = await creds('reader');
  // A finalized version every client must be refused writing to.
  await api(d, 'PUT', '/v1/models/frozen', {});
  await api(d, 'POST', '/v1/models/frozen/versions', { version: 'v1' });
  await api(d, 'POST', '/v1/models/frozen/versions/v1/finalize');
});
afterAll(() => d?.stop());

function tree(dir: string, files: Record<string, Buffer>): void {
  for (const [name, body] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), body);
  }
}

describe.skipIf(!tools.aws)('aws CLI (Debian awscli)', () => {
  const env = () => {
    // Documented settings only: keys and region in the environment, part sizes and path-style
    // addressing in the config file, the endpoint with --endpoint-url.
    const config = join(work, 'aws-config');
    writeFileSync(config, '[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n  addressing_style = path\n');
    return { AWS_ACCESS_KEY_ID: writer.id, AWS_SECRET_ACCESS_KEY: writer.secret, AWS_CONFIG_FILE: config, AWS_SHARED_CREDENTIALS_FILE: join(work, 'none') };
  };
  const aws = (args: string[], extra: Record<string, string> = {}) => run(AWS, ['--endpoint-url', endpoint, ...args], { ...env(), ...extra });

  it('cp uploads a 20 MiB file multipart; ls lists it; the ETag is md5-of-md5s; a ranged get-object returns those bytes', async () => {
    const big = randomBytes(20 * 1024 * 1024 + 5);
    const src = join(work, 'aws-big.bin');
    writeFileSync(src, big);
    const cp = await aws(['s3', 'cp', src, 's3://models/awsmodel/v1/weights/model.safetensors']);
    expect(cp.stderr).toBe('');
    expect(cp.code).toBe(0);
    const ls = await aws(['s3', 'ls', '--recursive', 's3://models/awsmodel/']);
    expect(ls.stdout).toMatch(new RegExp(`${big.length} awsmodel/v1/weights/model.safetensors`));
    const head = JSON.parse((await aws(['s3api', 'head-object', '--bucket', 'models', '--key', 'awsmodel/v1/weights/model.safetensors'])).stdout);
    expect(head.ContentLength).toBe(big.length);
    expect(head.ETag).toMatch(/^"[0-9a-f]{32}-3"$/);
    const out = join(work, 'aws-range.bin');
    const ranged = await aws(['s3api', 'get-object', '--bucket', 'models', '--key', 'awsmodel/v1/weights/model.safetensors', '--range', 'bytes=100-1099', out]);
    expect(ranged.code).toBe(0);
    expect(JSON.parse(ranged.stdout).ContentRange).toBe(`bytes 100-1099/${big.length}`);
    expect(readFileSync(out).equals(big.subarray(100, 1100))).toBe(true);
    // A copy between versions past the multipart threshold goes part by part (UploadPartCopy).
    const copied = await aws(['s3', 'cp', 's3://models/awsmodel/v1/weights/model.safetensors', 's3://models/awsmodel/v3/model.safetensors']);
    expect(copied.stderr).toBe('');
    const copyBack = join(work, 'aws-copy.bin');
    expect((await aws(['s3', 'cp', 's3://models/awsmodel/v3/model.safetensors', copyBack])).code).toBe(0);
    expect(readFileSync(copyBack).equals(big)).toBe(true);
    // Checkpoints go multipart the same way, and come back whole.
    expect((await aws(['s3', 'cp', src, 's3://checkpoints/awsrun/500/model.pt'])).code).toBe(0);
    const back = join(work, 'aws-ckpt.bin');
    expect((await aws(['s3', 'cp', 's3://checkpoints/awsrun/500/model.pt', back])).code).toBe(0);
    expect(readFileSync(back).equals(big)).toBe(true);
  });

  it('sync up and down copies a tree byte-equal, and a second sync transfers nothing', async () => {
    const files = { 'config.json': Buffer.from('{"a":1}'), 'tokenizer/vocab.txt': randomBytes(70_000), 'shards/a b+c.bin': randomBytes(9 * 1024 * 1024) };
    const up = join(work, 'aws-up');
    tree(up, files);
    expect((await aws(['s3', 'sync', up, 's3://models/awsmodel/v2/'])).code).toBe(0);
    const down = join(work, 'aws-down');
    const first = await aws(['s3', 'sync', 's3://models/awsmodel/v2/', down]);
    expect(first.code).toBe(0);
    for (const [name, body] of Object.entries(files)) expect(readFileSync(join(down, name)).equals(body)).toBe(true);
    const again = await aws(['s3', 'sync', up, 's3://models/awsmodel/v2/']);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('');
  });

  it('presign gives a URL plain HTTP can GET; a wrong secret is SignatureDoesNotMatch; a finalized version refuses cp', async () => {
    const url = (await aws(['s3', 'presign', 's3://models/awsmodel/v2/config.json', '--expires-in', '60'])).stdout.trim();
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"a":1}');
    const bad = await aws(['s3', 'ls', 's3://models/'], { AWS_SECRET_ACCESS_KEY: 'x'.repeat(40) });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('SignatureDoesNotMatch');
    const src = join(work, 'aws-small.txt');
    writeFileSync(src, 'late');
    const frozen = await aws(['s3', 'cp', src, 's3://models/frozen/v1/late.txt']);
    expect(frozen.code).not.toBe(0);
    expect(frozen.stderr).toMatch(/finalized/);
  });
});

describe.skipIf(!tools.boto3)('boto3 (Debian python3-boto3)', () => {
  it('upload_file (multipart), paginated list_objects_v2, download_file, presigned GET, and the errors a script would branch on', async () => {
    const big = randomBytes(12 * 1024 * 1024 + 3);
    const src = join(work, 'boto-big.bin');
    writeFileSync(src, big);
    const script = join(work, 'boto.py');
    writeFileSync(
      script,
      `
import json, os, sys, urllib.request
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

def client(secret):
    return boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], region_name='us-east-1',
        aws_access_key_id=os.environ['KEY'], aws_secret_access_key=secret,
        config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))

s3 = client(os.environ['SECRET'])
out = {}
s3.upload_file(sys.argv[1], 'models', 'botomodel/v1/big.bin', Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
for i in range(7):
    s3.put_object(Bucket='models', Key='botomodel/v1/small/%02d.txt' % i, Body=b'x' * i)
keys = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='models', Prefix='botomodel/v1/', PaginationConfig={'PageSize': 3}):
    keys += [o['Key'] for o in page.get('Contents', [])]
out['keys'] = keys
folders = s3.list_objects_v2(Bucket='models', Prefix='botomodel/', Delimiter='/')
out['prefixes'] = [p['Prefix'] for p in folders.get('CommonPrefixes', [])]
s3.download_file('models', 'botomodel/v1/big.bin', sys.argv[2])
out['etag'] = s3.head_object(Bucket='models', Key='botomodel/v1/big.bin')['ETag']
url = s3.generate_presigned_url('get_object', Params={'Bucket': 'models', 'Key': 'botomodel/v1/small/03.txt'}, ExpiresIn=60)
out['presigned'] = urllib.request.urlopen(url).read().decode()
def error(f):
    try:
        f()
        return 'ok'
    except ClientError as e:
        return e.response['Error']['Code']
out['missing'] = error(lambda: s3.get_object(Bucket='models', Key='botomodel/v1/none'))
out['finalized'] = error(lambda: s3.put_object(Bucket='models', Key='frozen/v1/x.txt', Body=b'x'))
out['bad_secret'] = error(lambda: client('y' * 40).list_objects_v2(Bucket='models'))
print(json.dumps(out))
`,
    );
    const dst = join(work, 'boto-down.bin');
    const r = await run(PYTHON, [script, src, dst], { ENDPOINT: endpoint, KEY: writer.id, SECRET: writer.secret });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.keys).toEqual(['botomodel/v1/big.bin', ...[0, 1, 2, 3, 4, 5, 6].map((i) => `botomodel/v1/small/0${i}.txt`)]);
    expect(out.prefixes).toEqual(['botomodel/v1/']);
    expect(readFileSync(dst).equals(big)).toBe(true);
    expect(out.etag).toMatch(/^"[0-9a-f]{32}-3"$/);
    expect(out.presigned).toBe('xxx');
    expect(out.missing).toBe('NoSuchKey');
    expect(out.finalized).toBe('AccessDenied');
    expect(out.bad_secret).toBe('SignatureDoesNotMatch');
  });
});

describe.skipIf(!tools.rclone)('rclone (Debian rclone)', () => {
  // rclone's documented environment configuration: RCLONE_CONFIG_<REMOTE>_<OPTION>.
  const env = (who = writer) => ({
    RCLONE_CONFIG: join(work, 'rclone.conf'),
    RCLONE_CONFIG_STRATA_TYPE: 's3',
    RCLONE_CONFIG_STRATA_PROVIDER: 'Other',
    RCLONE_CONFIG_STRATA_ACCESS_KEY_ID: who.id,
    RCLONE_CONFIG_STRATA_SECRET_ACCESS_KEY: who.secret,
    RCLONE_CONFIG_STRATA_ENDPOINT: endpoint,
    RCLONE_CONFIG_STRATA_REGION: 'us-east-1',
  });
  const rclone = (args: string[], who = writer) => run(RCLONE, [...args, '--low-level-retries', '1', '--retries', '1'], env(who));

  it('copy up (one file multipart), lsjson, check --download, and copy down byte-equal', async () => {
    const files = { 'config.json': Buffer.from('{"r":1}'), 'weights/w.bin': randomBytes(11 * 1024 * 1024), 'weights/extra.bin': randomBytes(1000) };
    const up = join(work, 'rc-up');
    tree(up, files);
    const copy = await rclone(['copy', up, 'strata:models/rcmodel/v1', '--s3-upload-cutoff', '5M', '--s3-chunk-size', '5M']);
    expect(copy.stderr).not.toMatch(/ERROR/);
    expect(copy.code).toBe(0);
    const listed = JSON.parse((await rclone(['lsjson', '-R', '--files-only', 'strata:models/rcmodel/v1'])).stdout) as Array<{ Path: string; Size: number }>;
    expect(listed.map((f) => [f.Path, f.Size]).sort()).toEqual(Object.entries(files).map(([k, v]) => [k, v.length]).sort());
    const check = await rclone(['check', '--download', up, 'strata:models/rcmodel/v1']);
    expect(check.code).toBe(0);
    const down = join(work, 'rc-down');
    expect((await rclone(['copy', 'strata:models/rcmodel/v1', down])).code).toBe(0);
    for (const [name, body] of Object.entries(files)) expect(readFileSync(join(down, name)).equals(body)).toBe(true);
    // The small files went up as single PUTs: their ETag is the MD5 rclone checks against.
    const md5s = (await rclone(['md5sum', 'strata:models/rcmodel/v1/config.json'])).stdout;
    expect(md5s).toContain(md5(files['config.json']));
  });

  it('a reader may copy down but not up; the refusal names the reason', async () => {
    const up = join(work, 'rc-reader');
    tree(up, { 'r.txt': Buffer.from('no') });
    const refused = await rclone(['copy', up, 'strata:models/rcmodel/v1'], reader);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/AccessDenied/);
    expect((await rclone(['lsf', 'strata:models/rcmodel/v1'], reader)).stdout).toContain('config.json');
  });
});
