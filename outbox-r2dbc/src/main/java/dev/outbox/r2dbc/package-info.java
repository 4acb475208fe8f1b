/**
 * The write side of the transactional outbox: {@link dev.outbox.r2dbc.Message}, {@link
 * dev.outbox.r2dbc.OutboxWriter}, the protobuf {@link dev.outbox.r2dbc.Codec}, KSUID ids and
 * the outbox table and its operator view ({@link dev.outbox.r2dbc.OutboxStore}: backlog, dead
 * letters, redrive). The relay's protocol with the table lives in {@code internal}.
 *
 * <p>Everything here is non-blocking and null-marked: parameters and results are non-null
 * unless annotated {@link org.jspecify.annotations.Nullable}.
 */
@NullMarked
package dev.outbox.r2dbc;

import org.jspecify.annotations.NullMarked;
