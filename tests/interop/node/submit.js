// A Node.js backend submitting one f5-batch job with celery-node, then printing the worker's result as JSON.
//   node submit.js BROKER_URL RESULT_BACKEND QUEUE PROTOCOL(1|2) '<job json>'
const celery = require("celery-node");

const [broker, backend, queue, protocol, jobJson] = process.argv.slice(2);
const client = celery.createClient(broker, backend, queue);
client.conf.TASK_PROTOCOL = Number(protocol);

const result = client.createTask("f5tts.synthesize").applyAsync([], { job: JSON.parse(jobJson) });
result
  .get(180000)
  .then((value) => {
    console.log(JSON.stringify({ taskId: result.taskId, result: value }));
    return client.disconnect();
  })
  .then(() => process.exit(0))
  .catch((error) => {
    console.error(String(error));
    process.exit(1);
  });
