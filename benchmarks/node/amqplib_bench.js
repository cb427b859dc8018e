// One benchmark round of Node's amqplib, for benchmarks/amqplib_runner.py.
//   node amqplib_bench.js URL SCENARIO MESSAGES QUEUE
// SCENARIO: publish | publish+confirm | consume+ack. QUEUE: where to publish,
// or what to consume (the runner fills it, or names a fake broker stream).
// Prints one JSON line: the client's CPU (user + system) and wall time over
// the measured phase only, not the connect and set-up.
"use strict";
const amqp = require("amqplib");

const WINDOW = 500; // confirms awaited together, as in api_runners.py
const PREFETCH = 1000;
const BODY = Buffer.alloc(64, "x");

function meter() {
  const cpu = process.cpuUsage();
  const wall = process.hrtime.bigint();
  return (count) => {
    const used = process.cpuUsage(cpu);
    const seconds = Number(process.hrtime.bigint() - wall) / 1e9;
    return {
      messages: count,
      cpu_us_per_msg: (used.user + used.system) / count,
      msgs_per_s: count / seconds,
    };
  };
}

async function publish(connection, queue, count) {
  const channel = await connection.createChannel();
  const stop = meter();
  for (let i = 0; i < count; i++) {
    if (!channel.sendToQueue(queue, BODY)) {
      await new Promise((resolve) => channel.once("drain", resolve));
    }
  }
  await channel.prefetch(0); // a round trip: every publish has left the client
  return stop(count);
}

async function publishConfirmed(connection, queue, count) {
  const channel = await connection.createConfirmChannel();
  const stop = meter();
  for (let start = 0; start < count; start += WINDOW) {
    const window = Math.min(WINDOW, count - start);
    const confirms = [];
    for (let i = 0; i < window; i++) {
      confirms.push(
        new Promise((resolve, reject) =>
          channel.sendToQueue(queue, BODY, {}, (error) => (error ? reject(error) : resolve())),
        ),
      );
    }
    await Promise.all(confirms);
  }
  return stop(count);
}

async function consumeAck(connection, queue, count) {
  const channel = await connection.createChannel();
  await channel.prefetch(PREFETCH);
  await channel.checkQueue(queue);
  let seen = 0;
  let stop;
  const done = new Promise((resolve) => {
    stop = meter();
    channel.consume(queue, (message) => {
      channel.ack(message);
      seen += 1;
      if (seen === count) resolve();
    });
  });
  await done;
  await channel.prefetch(10); // a round trip: the acks have left
  return stop(count);
}

const SCENARIOS = {
  publish: publish,
  "publish+confirm": publishConfirmed,
  "consume+ack": consumeAck,
};

async function main() {
  const [url, scenario, messages, queue] = process.argv.slice(2);
  const run = SCENARIOS[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  const connection = await amqp.connect(url);
  const result = await run(connection, queue, Number(messages));
  await connection.close();
  console.log(JSON.stringify({ scenario, ...result }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
