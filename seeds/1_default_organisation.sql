-- The organisation every installation starts with. portcullis runs this on every deploy
-- (PORTCULLIS_SEED_MODE=always), so it must be idempotent: the slug is the natural key, and a
-- second run updates the row instead of adding one. Deleted by hand? The next deploy restores it.
INSERT INTO "organisations" ("name", "slug")
VALUES ('Default organisation', 'default')
ON CONFLICT ("slug") DO UPDATE SET "name" = EXCLUDED."name";
