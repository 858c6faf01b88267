"""ipywidgets views for the notebooks (built-in widgets only: Colab shows them): a browser of the misclassified
test images, and the figure of what each norm normalizes over for a chosen number of groups."""

from models import NORM_TYPES
from plots import plot_incorrect_predictions, plot_mistake, plot_normalized_over

ANY = "any"


def select(items, classes, true=ANY, predicted=ANY):
    """The mistakes whose true and predicted classes match (ANY matches every class)."""
    return [i for i in items
            if (true == ANY or classes[i["true"]] == true) and (predicted == ANY or classes[i["predicted"]] == predicted)]


def mistake_explorer(items, classes):
    """Pick a true and a predicted class, then step through those mistakes with the slider. Without ipywidgets
    (or a front end that cannot show widgets) this returns the static 5x2 grid of the most confident mistakes."""
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        return plot_incorrect_predictions(items, classes)

    true, predicted = (w.Dropdown(options=[ANY, *classes], value=ANY, description=d) for d in ("true", "predicted"))
    slider = w.IntSlider(value=0, min=0, max=0, description="mistake")
    count, out = w.Label(), w.Output()

    def render(_=None):
        chosen = select(items, classes, true.value, predicted.value)
        slider.max = max(len(chosen) - 1, 0)
        count.value = f"{len(chosen)} mistakes, most confident first"
        with out:
            out.clear_output(wait=True)
            if chosen:
                display(plot_mistake(chosen[min(slider.value, slider.max)], classes))
            else:
                print("no test image of that true class was given that predicted class")

    for control in (true, predicted, slider):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([true, predicted]), w.HBox([slider, count]), out])


def normalized_over_explorer(channels=8):
    """Pick a norm and GroupNorm's number of groups; the block of activations shows the values that share one
    mean and variance. Without ipywidgets this returns the figure of all four norms with 4 groups."""
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        return plot_normalized_over(4, channels)

    norm = w.Dropdown(options=[(NORM_TYPES[n].label, n) for n in ("bn", "ln", "in", "gn")], value="gn", description="norm")
    groups = w.Dropdown(options=[g for g in range(1, channels + 1) if channels % g == 0], value=4, description="groups")
    out = w.Output()

    def render(_=None):
        with out:
            out.clear_output(wait=True)
            display(plot_normalized_over(groups.value, channels, norms=(norm.value,)))

    for control in (norm, groups):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([norm, groups]), out])
