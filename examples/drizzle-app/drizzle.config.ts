import { defineConfig } from 'drizzle-kit';

// Migrations are written to the repository-level `migrations/` folder, which is
// what portcullis reads. The migrations table and schema are left at
// drizzle-kit's defaults ("drizzle"."__drizzle_migrations").
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/schema.ts',
  out: '../../migrations',
  dbCredentials: {
    url: process.env.DATABASE_URL!,
  },
});
