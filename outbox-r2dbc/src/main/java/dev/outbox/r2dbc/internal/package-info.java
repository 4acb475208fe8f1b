/**
 * Internal: the relay's protocol with the outbox table (claims, leases, settlement) and shared
 * plumbing. Public only so that the relay module can use it; not part of the API, it changes
 * without notice. Operators use {@link dev.outbox.r2dbc.OutboxStore}.
 */
@NullMarked
package dev.outbox.r2dbc.internal;

import org.jspecify.annotations.NullMarked;
