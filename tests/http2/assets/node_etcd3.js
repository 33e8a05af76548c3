// Drives petcd with the npm `etcd3` client (on @grpc/grpc-js): put, get,
// txn, delete, watch, lease, lock, election. Prints one "ok <step>" line per
// step and exits 0, or prints the error and exits 1.
// usage: node node_etcd3.js <modules dir> <host:port>
'use strict';
const path = require('path');
const { Etcd3 } = require(path.join(process.argv[2], 'etcd3'));

const client = new Etcd3({ hosts: 'http://' + process.argv[3] });

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function main() {
  await client.put('node/a').value('1');
  check((await client.get('node/a').string()) === '1', 'get after put');
  console.log('ok put/get');

  const t = await client.if('node/a', 'Value', '==', '1').then(client.put('node/a').value('2')).else(client.get('node/a')).commit();
  check(t.succeeded, 'txn succeeded');
  const f = await client.if('node/a', 'Value', '==', '1').then(client.put('node/a').value('3')).commit();
  check(!f.succeeded, 'txn failed compare');
  check((await client.get('node/a').string()) === '2', 'txn result');
  console.log('ok txn');

  await client.put('node/p/x').value('x');
  await client.put('node/p/y').value('y');
  const all = await client.getAll().prefix('node/p/').strings();
  check(all['node/p/x'] === 'x' && all['node/p/y'] === 'y', 'prefix get');
  await client.delete().prefix('node/p/');
  check(Object.keys(await client.getAll().prefix('node/p/').strings()).length === 0, 'delete prefix');
  console.log('ok range/delete');

  const watcher = await client.watch().prefix('node/w/').create();
  const seen = [];
  const done = new Promise((resolve) => {
    watcher.on('put', (kv) => {
      seen.push(kv.key.toString() + '=' + kv.value.toString());
      if (seen.length === 3) resolve();
    });
  });
  for (let i = 0; i < 3; i++) await client.put('node/w/' + i).value('v' + i);
  await done;
  check(seen.join(',') === 'node/w/0=v0,node/w/1=v1,node/w/2=v2', 'watch events ' + seen);
  await watcher.cancel();
  console.log('ok watch');

  const lease = client.lease(30);
  const id = await lease.grant();
  await lease.put('node/leased').value('l');
  await lease.keepaliveOnce();
  check((await client.get('node/leased').string()) === 'l', 'leased key');
  await lease.revoke();
  check((await client.get('node/leased').string()) === null, 'key gone with its lease');
  console.log('ok lease ' + id);

  // etcd3's lock is a try-lock: a second taker fails while it is held
  const held = client.lock('node/lock');
  await held.acquire();
  let refused = false;
  try {
    await client.lock('node/lock').acquire();
  } catch (err) {
    refused = /Failed to acquire a lock/.test(String(err));
  }
  check(refused, 'second lock refused while held');
  await held.release();
  await client.lock('node/lock').do(async () => {});
  console.log('ok lock');

  const election = client.election('node/election');
  const campaign = election.campaign('candidate-1');
  await new Promise((resolve, reject) => {
    campaign.on('elected', resolve);
    campaign.on('error', reject);
  });
  check((await election.leader()) === 'candidate-1', 'leader');
  await campaign.resign();
  console.log('ok election');
}

main().then(() => { client.close(); process.exit(0); }, (err) => {
  console.error('FAILED: ' + (err && err.stack || err));
  client.close();
  process.exit(1);
});
