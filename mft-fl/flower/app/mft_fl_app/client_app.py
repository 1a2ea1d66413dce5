"""The app's ClientApp: Flower requires one, but the nodes of this federation are native
`mft-fl` clients that train with mft. A Python SuperNode that receives work from this app
refuses it with a clear error."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Refuse: training happens in mft-fl."""
    raise RuntimeError("this federation's nodes are mft-fl clients (cargo run -p mft-fl -- run)")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Refuse: evaluation happens in mft-fl."""
    raise RuntimeError("this federation's nodes are mft-fl clients (cargo run -p mft-fl -- run)")
