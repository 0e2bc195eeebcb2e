# %% [markdown]
# # Mini: a two-exercise assignment for testing the pipeline quickly (numpy only)
#
# **After this notebook you will be able to**
#
# - write a numerically stable softmax;
# - compute the norms of the rows of a matrix.

# %% role="locked" grade_id="setup"
import numpy as np
from interplab import check

# %% [markdown]
# ## Softmax over the last axis

# %% role="solution" grade_id="impl_softmax"
def softmax(x):
    ### BEGIN SOLUTION
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
    ### END SOLUTION

# %% role="test" grade_id="test_softmax" points=2
check("mini.softmax", softmax)

# %% [markdown]
# ## Row norms

# %% role="solution" grade_id="impl_row_norms"
def row_norms(x):
    ### BEGIN SOLUTION
    return np.sqrt((x ** 2).sum(axis=1))
    ### END SOLUTION

# %% role="test" grade_id="test_row_norms" points=1
check("mini.row_norms", row_norms)
