// Step 5 (0005_add_review_status): a new enum value in the middle (ALTER TYPE ... ADD VALUE ...
// BEFORE ...). Nothing uses it in the same run: PostgreSQL forbids using a value added in the
// same transaction (see edge_cases.rs for that failure).
import { index, integer, pgEnum, pgTable, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

export const postStatus = pgEnum('post_status', ['draft', 'review', 'published']);

export const authors = pgTable('authors', {
  id: serial('id').primaryKey(),
  displayName: text('display_name').notNull(),
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
