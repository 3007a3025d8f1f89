"""The loops that move weights and pixels: the head on cached features, and batches of images.

- ``HeadTrainer``: trains a head on cached bottleneck features in a compiled
  loop, reporting to a Keras callback as ``fit`` would.
- ``pixel_batches``: batches gathered from a decoded ``uint8`` image array, for ``fit``.
- ``fine_tune_schedule``: the learning rate over a fine-tuning phase.
- ``SmoothedSparseCrossentropy``: cross-entropy with label smoothing, for ``fit``.

Nothing here knows about runs, events or files; ``tl_core.training.fitting``
joins these pieces into a run's phases.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def smoothed_targets(labels, num_classes: int, label_smoothing: float):
    """One-hot targets with ``label_smoothing`` of the probability spread evenly over every class."""
    one_hot = tf.one_hot(labels, num_classes)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


class HeadTrainer:
    """Trains a head on cached features with a compiled loop: many steps per call, one call for validation.

    A step on a 1,280-long feature vector takes microseconds, so ``model.fit``'s
    per-step and per-epoch bookkeeping would cost more than the learning. The
    loop runs ``steps_per_call`` steps inside one ``tf.function`` call, gathers
    each batch from the features already on the device, and reports to a Keras
    callback as ``fit`` would (batch ends, epoch ends with the same log names),
    so events, early stopping, best weights and stop requests work unchanged.

    The reported ``loss`` and ``val_loss`` are plain cross-entropy even when the
    head trains with label smoothing, so they compare with every other phase's.

    Args:
        head: The head model (softmax outputs).
        learning_rate: Adam's learning rate.
        batch_size: Feature vectors per step.
        class_weight: Loss weight per class index, or None.
        seed: Seed of the shuffling.
        steps_per_call: Steps run by one call of the compiled loop.
        label_smoothing: Share of each target spread over all classes (0: none).
    """

    def __init__(
        self,
        head: keras.Model,
        learning_rate: float,
        batch_size: int,
        class_weight: dict[int, float] | None = None,
        seed: int = 0,
        steps_per_call: int = 64,
        label_smoothing: float = 0.0,
    ) -> None:
        self.head = head
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(head.trainable_variables)  # now, inside the caller's distribution scope, not lazily in the loop
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.rng = np.random.default_rng(seed)
        self.steps_per_call = steps_per_call
        self.label_smoothing = label_smoothing
        self.num_classes = int(head.output_shape[-1])
        self.loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        self.train_steps = tf.function(self._train_steps, reduce_retracing=True)
        self.evaluate = tf.function(self._evaluate, reduce_retracing=True)

    def _train_steps(self, features, labels, weights, order, first_batch, batches):
        total_loss, total_weight, correct = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        count = tf.shape(order, out_type=tf.int64)[0]
        for batch in tf.range(first_batch, first_batch + batches):
            indices = order[batch * self.batch_size : tf.minimum((batch + 1) * self.batch_size, count)]
            batch_features, batch_labels, batch_weights = tf.gather(features, indices), tf.gather(labels, indices), tf.gather(weights, indices)
            with tf.GradientTape() as tape:
                probabilities = self.head(batch_features, training=True)
                losses = self.loss(batch_labels, probabilities)
                if self.label_smoothing:
                    targets = smoothed_targets(batch_labels, self.num_classes, self.label_smoothing)
                    training_losses = -tf.reduce_sum(targets * tf.math.log(tf.clip_by_value(probabilities, 1e-7, 1.0)), axis=1)
                else:
                    training_losses = losses
                loss = tf.reduce_sum(training_losses * batch_weights) / tf.reduce_sum(batch_weights)
            gradients = tape.gradient(loss, self.head.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.head.trainable_variables, strict=True))
            total_loss += tf.reduce_sum(losses * batch_weights)
            total_weight += tf.reduce_sum(batch_weights)
            correct += tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int64), batch_labels), tf.float32))
        return total_loss, total_weight, correct

    def _evaluate(self, features, labels):
        probabilities = self.head(features, training=False)
        loss = tf.reduce_mean(self.loss(labels, probabilities))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int64), labels), tf.float32))
        return loss, accuracy

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray],
        epochs: int,
        first_epoch: int = 0,
        callback: keras.callbacks.Callback | None = None,
    ) -> None:
        """Trains for ``epochs``; ``callback`` sees batch and epoch ends and may set ``head.stop_training``."""
        features_tensor, labels_tensor = tf.constant(features, tf.float32), tf.constant(labels, tf.int64)
        weights = np.ones(len(labels), np.float32) if not self.class_weight else np.array([self.class_weight.get(int(label), 1.0) for label in labels], np.float32)
        weights_tensor = tf.constant(weights)
        validation_features, validation_labels = tf.constant(validation[0], tf.float32), tf.constant(validation[1], tf.int64)
        batches = math.ceil(len(labels) / self.batch_size)
        self.head.stop_training = False
        if callback is not None:
            callback.set_model(self.head)
        for epoch in range(first_epoch, first_epoch + epochs):
            if callback is not None:
                callback.on_epoch_begin(epoch)
            order = tf.constant(self.rng.permutation(len(labels)), tf.int64)
            sums = np.zeros(3)
            for first_batch in range(0, batches, self.steps_per_call):
                count = min(self.steps_per_call, batches - first_batch)
                sums += np.array([value.numpy() for value in self.train_steps(features_tensor, labels_tensor, weights_tensor, order, tf.constant(first_batch, tf.int64), tf.constant(count, tf.int64))])
                logs = {"loss": sums[0] / max(sums[1], 1e-12), "accuracy": sums[2] / min((first_batch + count) * self.batch_size, len(labels))}
                if callback is not None:
                    callback.on_train_batch_end(first_batch + count - 1, logs)
                if self.head.stop_training:
                    break
            if self.head.stop_training:  # set mid-epoch: a stop request, so the epoch is unfinished and not validated
                if callback is not None:
                    callback.on_epoch_end(epoch, logs)  # the bridge notes the unfinished epoch and does not count it
                break
            validation_loss, validation_accuracy = self.evaluate(validation_features, validation_labels)
            logs = {**logs, "val_loss": float(validation_loss), "val_accuracy": float(validation_accuracy)}
            if callback is not None:
                callback.on_epoch_end(epoch, logs)
            if self.head.stop_training:
                break


def pixel_batches(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    shuffle_seed: int | None = None,
    augmenter=None,
) -> tf.data.Dataset:
    """A tf.data pipeline of (uint8 or augmented float32 images, labels) batches gathered from ``pixels``.

    Gathering runs in tf.data's threads and is prefetched, so the next batch is
    ready while the model works on the current one.
    """
    size = pixels.shape[1]
    label_array = np.zeros(len(rows), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    positions = tf.data.Dataset.from_tensor_slices(np.arange(len(rows)))
    if shuffle_seed is not None:
        positions = positions.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pixels[rows[indices]], label_array[indices]

    def load(indices):
        images, batch_labels = tf.numpy_function(gather, [indices], (tf.uint8, tf.int64))
        images.set_shape([None, size, size, 3])
        batch_labels.set_shape([None])
        return images, batch_labels

    batches = positions.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        batches = batches.map(lambda images, batch_labels: (augmenter(tf.cast(images, tf.float32), training=True), batch_labels), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def fine_tune_schedule(learning_rate: float, steps_per_epoch: int, epochs: int, shape: str) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate of a phase that trains backbone layers.

    Args:
        learning_rate: The peak learning rate.
        steps_per_epoch: Batches per epoch.
        epochs: Epochs of the phase.
        shape: ``"constant"``, or ``"cosine"``: a linear warm-up over the first
            epoch (at most a tenth of the phase) from a tenth of the peak, then a
            cosine decay to a hundredth of it by the last step. The warm-up lets the
            newly unfrozen layers start gently; the decay settles them at the end.

    Returns:
        A number for ``"constant"``, else a Keras schedule.
    """
    if shape == "constant":
        return learning_rate
    if shape != "cosine":
        raise ValueError(f"Unknown learning-rate schedule {shape!r}; expected 'constant' or 'cosine'.")
    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch, total // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 10, decay_steps=max(1, total - warmup), alpha=0.01, warmup_target=learning_rate, warmup_steps=warmup
    )


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer uses at its current step (a schedule evaluated now)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels with label smoothing (Keras' sparse loss has no smoothing option)."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_cross_entropy") -> None:
        super().__init__(name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        targets = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)
