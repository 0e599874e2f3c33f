// Prints, as JSON, what drizzle-orm's own readMigrationFiles returns for a migrations folder,
// next to the hash recomputed with node:crypto the way readMigrationFiles computes it
// (readFileSync, Buffer#toString, sha256, hex). Used by tests/conformance (hashes.rs).
//
// usage: node read-migrations.cjs <install dir holding node_modules> <migrations folder>
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');

const [installDir, folder] = process.argv.slice(2);
const requireFromInstall = createRequire(path.join(installDir, 'package.json'));
const { readMigrationFiles } = requireFromInstall('drizzle-orm/migrator');

const journal = JSON.parse(fs.readFileSync(`${folder}/meta/_journal.json`).toString());
const migrations = readMigrationFiles({ migrationsFolder: folder });

const result = journal.entries.map((entry, i) => {
  const query = fs.readFileSync(`${folder}/${entry.tag}.sql`).toString();
  return {
    tag: entry.tag,
    crypto: crypto.createHash('sha256').update(query).digest('hex'),
    drizzle: migrations[i].hash,
    folderMillis: migrations[i].folderMillis,
    sql: migrations[i].sql,
  };
});
process.stdout.write(JSON.stringify(result));
