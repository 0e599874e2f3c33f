// Step 6 (0006_add_indexes): a plain and a unique index.
import { index, integer, pgEnum, pgTable, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

export const postStatus = pgEnum('post_status', ['draft', 'review', 'published']);

export const authors = pgTable(
  'authors',
  {
    id: serial('id').primaryKey(),
    displayName: text('display_name').notNull(),
    email: text('email').notNull(),
  },
  (t) => [uniqueIndex('authors_email_idx').on(t.email)],
);

export const posts = pgTable(
  'posts',
  {
    id: serial('id').primaryKey(),
    authorId: integer('author_id')
      .notNull()
      .references(() => authors.id, { onDelete: 'cascade' }),
    title: text('title').notNull(),
    body: text('body'),
    status: postStatus('status').notNull().default('draft'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('posts_author_id_idx').on(t.authorId), index('posts_status_idx').on(t.status)],
);
