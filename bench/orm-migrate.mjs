// drizzle-orm's own migrator, the way an app calls it at startup: one node-postgres client,
// `migrate()` from drizzle-orm/node-postgres/migrator, then exit. Used by bench/bench.py.
// Environment: DATABASE_URL, MIGRATIONS_DIR (a drizzle-kit `out` folder).
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';

const url = process.env.DATABASE_URL;
const folder = process.env.MIGRATIONS_DIR;
if (!url || !folder) {
  console.error('orm-migrate: set DATABASE_URL and MIGRATIONS_DIR');
  process.exit(2);
}

const client = new pg.Client({ connectionString: url });
try {
  await client.connect();
  await migrate(drizzle(client), { migrationsFolder: folder });
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await client.end().catch(() => {});
}
