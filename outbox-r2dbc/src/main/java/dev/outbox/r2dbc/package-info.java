/**
 * The write side of the transactional outbox: {@link dev.outbox.r2dbc.Message}, {@link
 * dev.outbox.r2dbc.OutboxWriter}, the protobuf {@link dev.outbox.r2dbc.Codec}, KSUID ids and
 * the outbox table with the storage operations the relay uses ({@link
 * dev.outbox.r2dbc.OutboxStore}).
 *
 * <p>Everything here is non-blocking and null-marked: parameters and results are non-null
 * unless annotated {@link org.jspecify.annotations.Nullable}.
 */
@NullMarked
package dev.outbox.r2dbc;

import org.jspecify.annotations.NullMarked;
