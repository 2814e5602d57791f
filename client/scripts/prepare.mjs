/**
 * `prepare`: build dist/ when the package is installed from a path or a git URL.
 *
 * npm runs `prepare` in the package's own folder for such installs, but installs its
 * devDependencies only for git URLs: from a path the build tools may be missing, so
 * they are installed here first (without running scripts again).
 */
import { execSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = (command) => execSync(command, { cwd: root, stdio: 'inherit' });

if (!existsSync(new URL('../node_modules/.bin/tsup', import.meta.url))) {
  run('npm install --include=dev --ignore-scripts --no-audit --no-fund --loglevel=error');
}
run('npm run build');
