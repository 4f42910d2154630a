// Send one text message to many recipients with @grpc/grpc-js and @grpc/proto-loader only:
// no generated code, the .proto is loaded at run time.
//
//   (cd clients/node && npm ci)   # the two packages, once
//   node examples/node/send_batch.mjs 127.0.0.1:50051 bob,carol,ghost1,bob
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// Reuse clients/node's dependencies; in your project, `npm install @grpc/grpc-js @grpc/proto-loader`.
const require = createRequire(new URL('../../clients/node/package.json', import.meta.url));
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const protos = fileURLToPath(new URL('../../protos', import.meta.url));
const definition = protoLoader.loadSync('imgate/v1/gateway.proto', {
  includeDirs: [protos],
  keepCase: false,
  enums: String,
  longs: Number,
  defaults: true,
});
const { GatewayService } = grpc.loadPackageDefinition(definition).imgate.v1;

const [target = '127.0.0.1:50051', ids = 'bob,carol,ghost1,bob'] = process.argv.slice(2);
const client = new GatewayService(target, grpc.credentials.createInsecure());
const call = client.BatchSend(
  { recipientIds: ids.split(','), message: { text: { text: 'hello from Node' } } },
  { deadline: Date.now() + 60_000 },
);
const seen = new Set();
call.on('data', (response) => {
  for (const outcome of response.outcomes) {
    seen.add(outcome.recipientId);
    const reason = outcome.reason === 'FAILURE_REASON_UNSPECIFIED' ? '' : `  ${outcome.reason}`;
    console.log(`${outcome.recipientId}  ${outcome.state}${reason}`);
  }
  if (response.summary) console.log(`total=${response.summary.total} accepted=${response.summary.accepted}`);
});
call.on('error', (error) => {
  console.error(`BatchSend failed: ${error.code} ${error.details}`);
  process.exitCode = 1;
  client.close();
});
call.on('end', () => {
  if (seen.size !== new Set(ids.split(',')).size) process.exitCode = 1;
  client.close();
});
