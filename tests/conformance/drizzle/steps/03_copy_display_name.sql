-- Step 3 (0003_copy_display_name): a `drizzle-kit generate --custom` migration, filled in by the
-- test with this file: seed rows, then the data half of the rename.
INSERT INTO "authors" ("id", "name", "email") VALUES (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com');--> statement-breakpoint
SELECT setval(pg_get_serial_sequence('"authors"', 'id'), 2);--> statement-breakpoint
UPDATE "authors" SET "display_name" = "name";
