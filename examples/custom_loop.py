"""Plug CGaP into your own training loop (runs in ~10 s with the built-in MNIST subset).

    python examples/custom_loop.py [--epochs 8]

Your loop stays yours: ``CGaP`` only needs to hear about each finished epoch. It grows or prunes
on the schedule of its config and hands back the resized model and an optimizer whose momentum
followed its channels. Use ``cgap.model`` (an ``fx.GraphModule``) from then on.
"""

import argparse

import torch
import torch.nn.functional as F

from cgap_graph import zoo
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.seed import seed
from cgap_graph.run import data
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.hook import CGaP


def main(epochs: int = 8) -> float:
    torch.manual_seed(0)
    train = data.loader("mnist-mini", "train", batch_size=64)
    test = data.loader("mnist-mini", "test", batch_size=500)

    # a seed a quarter as wide as LeNet-5; LeNet-5's own widths become the growth capacity
    reference = trace(zoo.build("lenet5"), (1, 1, 28, 28))
    widths = seed(reference, 0.25, select="first", reinit=True).reference_widths

    config = TrainConfig(epochs=epochs, lr=0.05, f_growth=0.5, prune_start=0.6, prune_end=0.8,
                         tau_accu=0.8, gamma_w=0.3, saliency_batches=4)
    cgap = CGaP(reference, config=config, saliency_data=train, reference_widths=widths)
    optimizer = cgap.make_optimizer()

    for epoch in range(1, epochs + 1):
        model = cgap.model.train()
        correct = seen = 0
        for x, y in train:                       # an ordinary training loop
            optimizer.zero_grad()
            out = model(x)
            F.cross_entropy(out, y).backward()
            optimizer.step()
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        model, optimizer, events = cgap.on_epoch_end(epoch, correct / seen, optimizer)
        model.eval()
        with torch.no_grad():
            acc = sum((model(x).argmax(1) == y).sum().item() for x, y in test) / len(test.dataset)
        widths_now = "-".join(str(g.width) for g in cgap.cg.groups)
        print(f"epoch {epoch}: widths {widths_now}, test accuracy {100 * acc:.1f}% {events}")
    return acc


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    main(p.parse_args().epochs)
