// Copies the API protos from the repository into the package before `npm pack` or
// `npm publish`, so that the published package is self-contained; `--clean` removes the
// copy afterwards, so that the repository's protos stay the one source in development.
import { cpSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const copy = join(packageDir, 'protos');

rmSync(copy, { recursive: true, force: true });
if (!process.argv.includes('--clean')) {
  // imgate/ and google/api/ (the google.api.http option the service's RPCs carry).
  for (const tree of ['imgate', 'google']) {
    cpSync(join(packageDir, '..', '..', 'protos', tree), join(copy, tree), { recursive: true });
  }
}
