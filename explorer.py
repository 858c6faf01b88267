"""An ipywidgets browser for the misclassified test images (built-in widgets only: Colab shows them)."""

from matplotlib.figure import Figure

from utils import plot_incorrect_predictions

ANY = "any"


def select(items, classes, true=ANY, predicted=ANY):
    """The mistakes whose true and predicted classes match (ANY matches every class)."""
    return [i for i in items
            if (true == ANY or classes[i["true"]] == true) and (predicted == ANY or classes[i["predicted"]] == predicted)]


def mistake_figure(item, classes):
    fig = Figure(figsize=(3.2, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.imshow(item["image"].permute(1, 2, 0).numpy())
    ax.set_title(f"true: {classes[item['true']]} | pred: {classes[item['predicted']]}\n"
                 f"confidence {item['confidence']:.2f}, test image #{item['index']}", fontsize=10)
    ax.set_axis_off()
    return fig


def mistake_explorer(items, classes):
    """Pick a true and a predicted class, then step through those mistakes with the slider.

    Without ipywidgets (or a front end that cannot show widgets) this returns the static
    5x2 grid of the most confident mistakes instead.
    """
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        return plot_incorrect_predictions(items, classes)

    options = [ANY, *classes]
    true = w.Dropdown(options=options, value=ANY, description="true")
    predicted = w.Dropdown(options=options, value=ANY, description="predicted")
    slider = w.IntSlider(value=0, min=0, max=0, description="mistake")
    count = w.Label()
    out = w.Output()

    def render(_=None):
        chosen = select(items, classes, true.value, predicted.value)
        slider.max = max(len(chosen) - 1, 0)
        count.value = f"{len(chosen)} mistakes, most confident first"
        with out:
            out.clear_output(wait=True)
            if chosen:
                display(mistake_figure(chosen[min(slider.value, slider.max)], classes))
            else:
                print("no test image of that true class was given that predicted class")

    for control in (true, predicted, slider):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([true, predicted]), w.HBox([slider, count]), out])
