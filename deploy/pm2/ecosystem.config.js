// The daily QR cache warm under PM2, beside the Node app:
//   pm2 start deploy/pm2/ecosystem.config.js && pm2 save
// PM2 runs the warm once at start, then at 06:00 (the machine's time zone) every day; it does
// not restart it when it exits. Summary and logs: `pm2 logs warm-qr-cache`. The exit status
// (1: the warm failed, 2: a usage or configuration error) is in `pm2 describe warm-qr-cache`.
// The settings are read from the env file when this file is loaded: after changing them, run
// `pm2 start deploy/pm2/ecosystem.config.js --update-env` again.
'use strict';

const fs = require('fs');

const ENV_FILE = '/etc/qr-functions/warm-qr-cache.env';

// The env file's lines as cron's `sh` and systemd's EnvironmentFile= read them: KEY='value'
// (literal), KEY="value", KEY=value; blank lines and # comments skipped.
function readEnvFile(path) {
  const env = {};
  const lines = fs.readFileSync(path, 'utf8').split(/\r?\n/);
  lines.forEach((line, index) => {
    const text = line.trim();
    if (text === '' || text.startsWith('#')) return;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(text);
    if (!match) throw new Error(`${path}:${index + 1}: not a KEY=value line`);
    const [, key, raw] = match;
    const quoted = /^'([^']*)'$/.exec(raw) || /^"((?:[^"\\]|\\.)*)"$/.exec(raw);
    if (quoted) {
      env[key] = raw.startsWith('"') ? quoted[1].replace(/\\(.)/g, '$1') : quoted[1];
    } else if (/^['"]/.test(raw)) {
      throw new Error(`${path}:${index + 1}: ${key} has an unclosed quote`);
    } else {
      env[key] = raw.trim();
    }
  });
  return env;
}

module.exports = {
  apps: [
    {
      name: 'warm-qr-cache',
      script: '/usr/local/bin/warm-qr-cache',
      interpreter: 'none',
      autorestart: false,
      cron_restart: '0 6 * * *',
      time: true,
      env: readEnvFile(ENV_FILE),
    },
  ],
};
