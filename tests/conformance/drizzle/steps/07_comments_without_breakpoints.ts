// Step 7 (0007_comments_without_breakpoints): generated with `breakpoints: false`, so its
// statements (a table, a foreign key, an index) are joined by newlines only and the whole file is
// one chunk: one simple-protocol query holding several statements.
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

export const comments = pgTable(
  'comments',
  {
    id: serial('id').primaryKey(),
    postId: integer('post_id')
      .notNull()
      .references(() => posts.id, { onDelete: 'cascade' }),
    body: text('body').notNull(),
  },
  (t) => [index('comments_post_id_idx').on(t.postId)],
);
