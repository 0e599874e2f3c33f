-- Demo rows for local development, run only with PORTCULLIS_SEED_ENV=development (after the
-- common seeds). Idempotent like every seed: natural keys and ON CONFLICT DO UPDATE.
INSERT INTO "organisations" ("name", "slug") VALUES
  ('Acme Corporation', 'acme'),
  ('Globex', 'globex')
ON CONFLICT ("slug") DO UPDATE SET "name" = EXCLUDED."name";

INSERT INTO "users" ("email", "name", "display_name") VALUES
  ('alice@example.com', 'Alice Adams', 'Alice'),
  ('bob@example.com', 'Bob Brown', 'Bob'),
  ('carol@example.com', 'Carol Clark', NULL)
ON CONFLICT ("email") DO UPDATE
  SET "name" = EXCLUDED."name",
      "display_name" = EXCLUDED."display_name";

-- Who may do what where: one row per (user, organisation) with its role.
INSERT INTO "memberships" ("user_id", "organisation_id", "role")
SELECT u."id", o."id", m."role"::"membership_role"
  FROM (VALUES
          ('alice@example.com', 'acme', 'owner'),
          ('bob@example.com', 'acme', 'admin'),
          ('carol@example.com', 'acme', 'member'),
          ('carol@example.com', 'globex', 'owner')
       ) AS m ("email", "slug", "role")
  JOIN "users" u ON u."email" = m."email"
  JOIN "organisations" o ON o."slug" = m."slug"
ON CONFLICT ("user_id", "organisation_id") DO UPDATE SET "role" = EXCLUDED."role";

INSERT INTO "invitations" ("organisation_id", "invited_by", "email", "role")
SELECT o."id", u."id", 'dave@example.com', 'member'
  FROM "organisations" o
  JOIN "users" u ON u."email" = 'alice@example.com'
 WHERE o."slug" = 'acme'
ON CONFLICT ("organisation_id", "email") DO UPDATE
  SET "role" = EXCLUDED."role",
      "invited_by" = EXCLUDED."invited_by";
