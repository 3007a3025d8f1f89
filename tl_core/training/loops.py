"""The loops that move weights and pixels: the head on cached features, and batches of images.

- ``HeadTrainer``: trains a head on cached bottleneck features, many steps per
  compiled call, reporting to a Keras callback as ``fit`` would.
- ``image_batches``: what ``fit`` trains on when backbone layers train on images.
- ``fine_tune_schedule``: the learning rate over a fine-tuning phase.
- ``SmoothedSparseCrossentropy``: cross-entropy with label smoothing, for ``fit``.

Everything here runs on every Keras backend: the head's step is written with
``keras.ops`` and Keras' stateless calls, and only its gradient and its
compilation come from ``tl_core.backend``. Nothing here knows about runs,
events or files; ``tl_core.training.fitting`` joins these pieces into a run's phases.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tl_core.backend import compiled, value_and_gradients
from tl_core.models.build import MEAN_OVER_NETWORKS


class HeadTrainer:
    """Trains a head on cached features: many steps per compiled call, one call for validation.

    A step on a 1,280-long feature vector takes microseconds, so ``model.fit``'s
    per-step and per-epoch bookkeeping would cost several times the learning
    (measured with TensorFlow on 2 CPU cores: 16-23 s against 6 s for 200 epochs
    of 2,000 vectors). This loop runs ``steps_per_call`` steps inside one
    compiled function (``keras.ops.fori_loop`` over Keras' stateless calls),
    gathers each batch from the features already on the device, and reports to
    a Keras callback as ``fit`` would (batch ends, epoch ends with the same log
    names), so events, early stopping, best weights and stop requests work unchanged.

    Every batch has ``batch_size`` rows: the last one of an epoch is filled up with
    rows that weigh nothing, so the function compiles once for every epoch (JAX
    compiles once per shape). The reported ``loss`` and ``val_loss`` are plain
    cross-entropy even when the head trains with label smoothing, so they compare
    with every other phase's.

    Args:
        head: The head model (softmax outputs).
        learning_rate: Adam's learning rate.
        batch_size: Feature vectors per step.
        class_weight: Loss weight per class index, or None.
        seed: Seed of the shuffling.
        steps_per_call: Steps run by one call of the compiled loop.
        label_smoothing: Share of each target spread over all classes (0: none).

    A head over a joined backbone (``tl_core.models.build.joined_head``) averages one head per
    network; each of them learns from its own answer, as if trained alone, while the reported
    losses, the accuracy and the kept epoch are the averaged answer's.
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
        self.learner = _member_answers(head)  # the model whose answers the loss is taken of
        # TensorFlow updates variables in place inside its compiled function (its optimizer has no stateless apply);
        # JAX's compiled functions must be pure, so there the weights travel through the loop as values.
        self.stateless = keras.config.backend() != "tensorflow"
        self.train_steps = compiled(self._stateless_steps if self.stateless else self._stateful_steps)
        self.evaluate = compiled(self._evaluate)

    def _losses(self, answers, labels):
        """The head's probabilities, their per-row plain cross-entropy, and the (smoothed) cross-entropy the head learns from.

        ``answers``: the head's probabilities, or each joined network's (their mean is the head's); each then learns from its own.
        """
        answers = list(answers) if isinstance(answers, (list, tuple)) else [answers]
        probabilities = answers[0] if len(answers) == 1 else ops.mean(ops.stack(answers), axis=0)
        targets = ops.one_hot(labels, self.num_classes)
        plain = -ops.sum(targets * ops.log(ops.clip(probabilities, 1e-7, 1.0)), axis=1)
        if not self.label_smoothing and len(answers) == 1:
            return probabilities, plain, plain
        if self.label_smoothing:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        learned = [-ops.sum(targets * ops.log(ops.clip(answer, 1e-7, 1.0)), axis=1) for answer in answers]
        return probabilities, plain, learned[0] if len(learned) == 1 else ops.mean(ops.stack(learned), axis=0)

    def _stateful_steps(self, state, features, labels, batches, weights):
        """One training step per row of ``batches``, updating the head's variables in place; returns the sums of the plain loss, the weights and the right answers."""

        def step(number, sums):
            indices, batch_weights = batches[number], weights[number]
            batch_features, batch_labels = ops.take(features, indices, axis=0), ops.take(labels, indices, axis=0)

            def loss_of(variables):
                probabilities, plain, learned = self._losses(self.learner(batch_features, training=True), batch_labels)
                return ops.sum(learned * batch_weights) / ops.maximum(ops.sum(batch_weights), 1e-12), (probabilities, plain)

            _, (probabilities, plain), gradients = value_and_gradients(loss_of, self.head.trainable_variables)
            self.optimizer.apply(gradients, self.head.trainable_variables)
            return self._sums(sums, probabilities, plain, batch_labels, batch_weights)

        zero = ops.zeros((), dtype="float32")
        return (*state, *ops.fori_loop(0, ops.shape(batches)[0], step, (zero, zero, zero)))

    def _sums(self, sums, probabilities, plain, labels, weights):
        hits = ops.cast(ops.equal(ops.argmax(probabilities, axis=1), labels), "float32") * ops.cast(weights > 0, "float32")
        return sums[0] + ops.sum(plain * weights), sums[1] + ops.sum(weights), sums[2] + ops.sum(hits)

    def _stateless_steps(self, state, features, labels, batches, weights):
        """One training step per row of ``batches`` (indices into the features, with each position's loss weight in ``weights``).

        Returns the new state and the sums of the plain loss, the weights and the right answers.
        """

        def step(number, carry):
            trainable, non_trainable, optimizer_variables, total_loss, total_weight, correct = carry
            indices, batch_weights = batches[number], weights[number]
            batch_features, batch_labels = ops.take(features, indices, axis=0), ops.take(labels, indices, axis=0)

            def loss_of(values):
                answers, new_non_trainable = self.learner.stateless_call(values, non_trainable, batch_features, training=True)
                probabilities, plain, learned = self._losses(answers, batch_labels)
                loss = ops.sum(learned * batch_weights) / ops.maximum(ops.sum(batch_weights), 1e-12)
                return loss, (probabilities, plain, new_non_trainable)

            _, (probabilities, plain, non_trainable), gradients = value_and_gradients(loss_of, trainable)
            trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, gradients, trainable)
            sums = self._sums((total_loss, total_weight, correct), probabilities, plain, batch_labels, batch_weights)
            return (list(trainable), list(non_trainable), list(optimizer_variables), *sums)

        zero = ops.zeros((), dtype="float32")
        return ops.fori_loop(0, ops.shape(batches)[0], step, (*state, zero, zero, zero))

    def _evaluate(self, trainable, non_trainable, features, labels):
        probabilities, _ = self.head.stateless_call(trainable, non_trainable, features, training=False)
        _, plain, _ = self._losses(probabilities, labels)
        accuracy = ops.mean(ops.cast(ops.equal(ops.argmax(probabilities, axis=1), labels), "float32"))
        return ops.mean(plain), accuracy

    def _state(self) -> tuple:
        """The values the stateless loop carries (nothing when the variables are updated in place)."""
        if not self.stateless:
            return ()
        return (
            [variable.value for variable in self.head.trainable_variables],
            [variable.value for variable in self.head.non_trainable_variables],
            [variable.value for variable in self.optimizer.variables],
        )

    def _weights(self) -> tuple[list, list]:
        return [variable.value for variable in self.head.trainable_variables], [variable.value for variable in self.head.non_trainable_variables]

    def _store(self, state) -> None:
        """Writes the loop's values back into the head and the optimizer (at each epoch's end: the callback reads the weights)."""
        if not self.stateless:
            return
        trainable, non_trainable, optimizer_variables = state
        for variables, values in ((self.head.trainable_variables, trainable), (self.head.non_trainable_variables, non_trainable), (self.optimizer.variables, optimizer_variables)):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)

    def _epoch_batches(self, row_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A shuffled order of the rows as full batches, and each position's loss weight (the rows filling the last batch weigh nothing)."""
        count = len(row_weights)
        order = self.rng.permutation(count)
        batches = math.ceil(count / self.batch_size)
        filler = batches * self.batch_size - count
        indices = np.concatenate([order, np.resize(order, filler)]).astype("int32")
        weights = np.concatenate([row_weights[order], np.zeros(filler, np.float32)])
        return indices.reshape(batches, self.batch_size), weights.reshape(batches, self.batch_size)

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
        row_weights = np.ones(len(labels), np.float32) if not self.class_weight else np.array([self.class_weight.get(int(label), 1.0) for label in labels], np.float32)
        features_tensor, labels_tensor = ops.convert_to_tensor(np.asarray(features, np.float32)), ops.convert_to_tensor(np.asarray(labels, "int32"))
        validation_features, validation_labels = ops.convert_to_tensor(np.asarray(validation[0], np.float32)), ops.convert_to_tensor(np.asarray(validation[1], "int32"))
        self.head.stop_training = False
        if callback is not None:
            callback.set_model(self.head)
        state = self._state()
        for epoch in range(first_epoch, first_epoch + epochs):
            if callback is not None:
                callback.on_epoch_begin(epoch)
            batches, weights = self._epoch_batches(row_weights)
            sums = np.zeros(3)
            for first_batch in range(0, len(batches), self.steps_per_call):
                chunk = slice(first_batch, first_batch + self.steps_per_call)
                *state, loss, weight, correct = self.train_steps(state, features_tensor, labels_tensor, ops.convert_to_tensor(batches[chunk]), ops.convert_to_tensor(weights[chunk]))
                state = tuple(state)
                sums += [float(ops.convert_to_numpy(loss)), float(ops.convert_to_numpy(weight)), float(ops.convert_to_numpy(correct))]
                done = min((first_batch + len(batches[chunk])) * self.batch_size, len(labels))
                logs = {"loss": sums[0] / max(sums[1], 1e-12), "accuracy": sums[2] / done}
                if callback is not None:
                    callback.on_train_batch_end(first_batch + len(batches[chunk]) - 1, logs)
                if self.head.stop_training:
                    break
            self._store(state)
            if self.head.stop_training:  # set mid-epoch: a stop request, so the epoch is unfinished and not validated
                if callback is not None:
                    callback.on_epoch_end(epoch, logs)  # the bridge notes the unfinished epoch and does not count it
                break
            validation_loss, validation_accuracy = self.evaluate(*self._weights(), validation_features, validation_labels)
            logs = {**logs, "val_loss": float(ops.convert_to_numpy(validation_loss)), "val_accuracy": float(ops.convert_to_numpy(validation_accuracy))}
            if callback is not None:
                callback.on_epoch_end(epoch, logs)
            if self.head.stop_training:
                break


def _member_answers(head: keras.Model) -> keras.Model:
    """The model over ``head``'s layers that gives each joined network's answer before the mean (``head`` itself when it has one answer)."""
    if MEAN_OVER_NETWORKS not in [layer.name for layer in head.layers]:
        return head
    learner = keras.Model(head.inputs, head.get_layer(MEAN_OVER_NETWORKS).input, name="head_per_network")
    for own, theirs in ((learner.trainable_variables, head.trainable_variables), (learner.non_trainable_variables, head.non_trainable_variables)):
        if [variable.path for variable in own] != [variable.path for variable in theirs]:  # the stateless steps pass the head's values in its order
            raise ValueError("The per-network model's variables are not in the head's order.")
    return learner


def image_batches(pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None, augmenter=None):
    """What ``fit`` trains on: batches of the decoded images at ``rows`` with their labels, augmented when ``augmenter`` is given.

    With TensorFlow, a ``tf.data`` pipeline gathers and augments each batch in its
    own threads, ahead of the training step (on 2 CPU cores that keeps fine-tuning
    at 0.86-0.94x a plain ``fit`` without augmentation). On the other backends a
    ``keras.utils.PyDataset`` gathers the batches, and the augmentation runs in the
    model being trained (see ``training_model``), on the GPU where there is one.

    Returns:
        ``(data, augmented_in_data)``: what ``fit`` takes, and whether it is augmented already.
    """
    if keras.config.backend() == "tensorflow":
        return _tf_batches(pixels, rows, labels, batch_size, shuffle_seed, augmenter), augmenter is not None
    return ImageBatches(pixels, rows, labels, batch_size, shuffle_seed), False


def training_model(classifier: keras.Model, augmenter, augmented_in_data: bool) -> keras.Model:
    """The model ``fit`` trains: the classifier, after the augmenter when the batches are not augmented already.

    The augmenter acts only while training (``training=True``); the classifier's
    layers are shared, so the trained weights are the classifier's. It is always a
    model of its own, which ``compile`` gives the optimizer: compiled itself, the
    classifier would carry the optimizer's state (twice the weights that train)
    into the saved ``model.keras``.
    """
    if augmenter is None or augmented_in_data:
        return keras.Model(classifier.inputs, classifier.outputs, name=f"{classifier.name}_trained")
    inputs = keras.Input(classifier.input_shape[1:], name="image")
    return keras.Model(inputs, classifier(augmenter(inputs)), name=f"{classifier.name}_augmented")


class ImageBatches(keras.utils.PyDataset):
    """Batches of decoded images (float32) and their labels, reshuffled every epoch; for the backends other than TensorFlow."""

    def __init__(self, pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.pixels, self.rows, self.labels, self.batch_size = pixels, np.asarray(rows), np.asarray(labels, dtype="int32"), batch_size
        self.rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        self.order = self.rng.permutation(len(self.rows)) if self.rng is not None else np.arange(len(self.rows))

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        positions = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return np.asarray(self.pixels[self.rows[positions]], dtype=np.float32), self.labels[positions]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.rows))


def _tf_batches(pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray | None, batch_size: int, shuffle_seed: int | None = None, augmenter=None):
    """A tf.data pipeline of (uint8 or augmented float32 images, labels) batches gathered from ``pixels``, prefetched."""
    import tensorflow as tf

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
