-- The administrator and their role in the default organisation (membership_role is the example
-- app's RBAC: owner > admin > member).
--
-- The e-mail address comes from the deploy environment, not from this file:
--   PORTCULLIS_SEED_VAR_ADMIN_EMAIL=ops@example.com
-- portcullis hands it over as the transaction-local setting portcullis.admin_email, bound as a
-- query parameter, so quotes or semicolons in the value are just characters. Unset, the first
-- current_setting() below fails (exit 9) with a hint naming the variable.
INSERT INTO "users" ("email", "name", "display_name")
VALUES (current_setting('portcullis.admin_email'), 'Administrator', 'Admin')
ON CONFLICT ("email") DO UPDATE
  SET "name" = EXCLUDED."name",
      "display_name" = EXCLUDED."display_name";

INSERT INTO "memberships" ("user_id", "organisation_id", "role")
SELECT u."id", o."id", 'owner'
  FROM "users" u
  JOIN "organisations" o ON o."slug" = 'default'
 WHERE u."email" = current_setting('portcullis.admin_email')
ON CONFLICT ("user_id", "organisation_id") DO UPDATE SET "role" = EXCLUDED."role";
