// Step 2 (0002_rename_add_display_name): first half of renaming authors.name to display_name.
//
// drizzle-kit asks interactively whether a column that disappears while another appears in the
// same table is a rename, and without a TTY it fails (with exit 0). A rename is therefore done in
// three migrations that never prompt: add the new column (this step), copy the data (the custom
// migration 0003), drop the old column (step 4).
import { index, integer, pgEnum, pgTable, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

export const postStatus = pgEnum('post_status', ['draft', 'published']);

export const authors = pgTable('authors', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  displayName: text('display_name'),
  email: text('email').notNull(),
});

export const posts = pgTable('posts', {
  id: serial('id').primaryKey(),
  authorId: integer('author_id')
    .notNull()
    .references(() => authors.id, { onDelete: 'cascade' }),
  title: text('title').notNull(),
  body: text('body'),
  status: postStatus('status').notNull().default('draft'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});
